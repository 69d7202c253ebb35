"""`flexsfc manifests`: prints the generated deployment set (or only the CRDs), or writes deploy/."""

from pathlib import Path

import yaml
from click.testing import CliRunner

from flexsfc.cli import main
from flexsfc.operator import deployset


def test_prints_everything_and_only_crds_on_request() -> None:
    runner = CliRunner()
    everything = runner.invoke(main, ["manifests"])
    assert everything.exit_code == 0, everything.output
    kinds = [doc["kind"] for doc in yaml.safe_load_all(everything.output)]
    assert kinds[0] == "Namespace" and {"DaemonSet", "Deployment", "ClusterRoleBinding"} <= set(kinds)
    assert "Kustomization" not in kinds  # kustomization.yaml is for `kubectl apply -k` only

    crds_only = runner.invoke(main, ["manifests", "--crds"])
    names = [doc["metadata"]["name"] for doc in yaml.safe_load_all(crds_only.output)]
    assert {"servicefunctionchains.flexsfc.io", "crossconnections.flexsfc.io"} <= set(names)
    assert all(doc["kind"] == "CustomResourceDefinition" for doc in yaml.safe_load_all(crds_only.output))


def test_write_produces_the_committed_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["manifests", "--write", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for manifest in deployset.deployment_files():
        assert (tmp_path / manifest.path).read_text(encoding="utf-8") == manifest.render()
