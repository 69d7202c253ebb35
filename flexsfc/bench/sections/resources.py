"""Figure 4: CPU requested by a chain when only the stressed NF scales versus the whole chain.

The per-replica requests come from real Deployment manifests (bench/manifests/*.yaml): the sum of
`resources.requests.cpu` over the pod template's containers, for each Deployment labelled with
flexsfc.io/network-function.
"""

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes.utils import parse_quantity

from flexsfc.bench.context import BenchContext, section_result
from flexsfc.model.constants import LABEL_NF

# bench/manifests at the repository root (this file is flexsfc/bench/sections/resources.py).
DEFAULT_MANIFEST_DIR = Path(__file__).resolve().parents[3] / "bench" / "manifests"
DEFAULT_SCALED_NF = "firewall"
MAX_INSTANCES = 10


class ManifestError(ValueError):
    pass


def requested_millicpu(manifest_dir: Path) -> dict[str, int]:
    """NF name -> milliCPU requested by one replica, from the Deployments in `manifest_dir`."""
    per_nf: dict[str, int] = {}
    files = sorted(manifest_dir.glob("*.yaml"))
    if not files:
        raise ManifestError(f"no *.yaml Deployment manifests in {manifest_dir}")
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Deployment":
                continue
            template = doc.get("spec", {}).get("template", {})
            nf = template.get("metadata", {}).get("labels", {}).get(LABEL_NF)
            if not nf:
                continue
            total = 0
            for container in template.get("spec", {}).get("containers", []):
                cpu = container.get("resources", {}).get("requests", {}).get("cpu")
                if cpu is None:
                    raise ManifestError(
                        f"{path}: container {container.get('name')!r} of NF {nf!r} has no "
                        "resources.requests.cpu; add one (e.g. '200m')"
                    )
                total += int(parse_quantity(str(cpu)) * 1000)
            per_nf[nf] = total
    if not per_nf:
        raise ManifestError(f"no Deployment labelled {LABEL_NF} in {manifest_dir}")
    return per_nf


def scaling_curves(per_nf: dict[str, int], scaled_nf: str, max_instances: int) -> dict[str, Any]:
    """Requested milliCPU for 1..max_instances instances, NF-level scaling versus whole-chain scaling."""
    if scaled_nf not in per_nf:
        raise ManifestError(f"scaled NF {scaled_nf!r} not among the manifests' NFs {sorted(per_nf)}")
    chain_total = sum(per_nf.values())
    others = chain_total - per_nf[scaled_nf]
    instances = list(range(1, max_instances + 1))
    nf_level = [n * per_nf[scaled_nf] + others for n in instances]
    whole_chain = [n * chain_total for n in instances]
    return {
        "instances": instances,
        "nf_level_millicpu": nf_level,
        "whole_chain_millicpu": whole_chain,
        "saving_ratio": [round(1 - a / b, 4) for a, b in zip(nf_level, whole_chain, strict=True)],
    }


def run(ctx: BenchContext, manifest_dir: Path = DEFAULT_MANIFEST_DIR) -> dict[str, Any]:
    started = time.monotonic()
    per_nf = requested_millicpu(manifest_dir)
    data = {
        "manifest_dir": str(manifest_dir),
        "per_replica_millicpu": per_nf,
        "scaled_nf": DEFAULT_SCALED_NF,
        **scaling_curves(per_nf, DEFAULT_SCALED_NF, MAX_INSTANCES),
    }
    return section_result(ctx, "resources", data, started)
