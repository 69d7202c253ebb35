"""Latency of flexsfc-cni calls as a runtime sees them: fork/exec of the installed executable to exit,
Python start-up included.

Interleaved rounds (the machine drifts), each timing: the bare interpreter start-up (`python -c
pass`, the floor every Python plugin pays), Debian's `static` IPAM plugin alone, then flexsfc-cni ADD
and DEL for an L2 attachment and for an L3 attachment (which runs `static` inside), and the DEL of an
L2 attachment whose veth is a port of a pinned data plane (DEL marks it leaving first).

    python -m flexsfc.bench.cni_latency [--rounds 20] [--json out.json]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flexsfc.bench.common import BenchContext, section_result, summary
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.types import Side

ADD_TARGET_MS = 150.0
_BENCH_XC = "bench-cni"
WARMUP_ROUNDS = 2
CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
KINDS = (
    "python_startup",
    "static_ipam_add",
    "add_l2",
    "del_l2",
    "add_l3",
    "del_l3",
    "del_l2_port",
    "add_l2_minus_startup",
    "add_l3_minus_startup",
)


def plugin_executable() -> str:
    return str(Path(sys.executable).with_name("flexsfc-cni"))


def _static_plugin() -> str:
    for directory in CNI_PATH.split(":"):
        candidate = os.path.join(directory, "static")
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("the static IPAM plugin is not installed (Debian containernetworking-plugins)")


def _configs(state_dir: str) -> dict[str, dict[str, Any]]:
    base = {"cniVersion": "1.1.0", "type": "flexsfc-cni", "stateDir": state_dir, "mtu": 1500}
    ipam = {
        "type": "static",
        "addresses": [{"address": "10.250.0.2/24", "gateway": "10.250.0.1"}, {"address": "fd00:250::2/64"}],
        "routes": [{"dst": "10.251.0.0/16"}],
    }
    return {
        "l2": {**base, "name": "bench-l2", "macGenerationString": "bench-l2"},
        "l3": {**base, "name": "bench-l3", "macGenerationString": "bench-l3", "ipam": ipam},
    }


def _timed(argv: list[str], env: dict[str, str], stdin: bytes) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=60)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stdout.decode()} {done.stderr.decode()}")
    return elapsed_ms


def _del_of_a_port(plugin: str, env: dict[str, str], config: dict[str, Any], dataplane: Dataplane) -> float:
    """ADD (untimed), make the host end a replica port, time the DEL, forget the port."""
    stdin = json.dumps(config).encode()
    added = subprocess.run([plugin], input=stdin, env={**env, "CNI_COMMAND": "ADD"}, capture_output=True)
    if added.returncode != 0:
        raise RuntimeError(f"flexsfc-cni ADD failed: {added.stdout.decode()} {added.stderr.decode()}")
    host = next(i for i in json.loads(added.stdout)["interfaces"] if "sandbox" not in i)
    dataplane.set_replicas(_BENCH_XC, Side.B, [ReplicaPort(socket.if_nametoindex(host["name"]), "bench-pod")])
    try:
        return _timed([plugin], {**env, "CNI_COMMAND": "DEL"}, stdin)
    finally:
        dataplane.set_replicas(_BENCH_XC, Side.B, [])


def measure(rounds: int = 20) -> dict[str, Any]:
    """Per-call wall time in milliseconds for every kind, ``rounds`` interleaved rounds."""
    if os.geteuid() != 0:
        raise PermissionError("needs root (network namespaces)")
    plugin = plugin_executable()
    static = _static_plugin()
    netns = f"fxbench-cni-{uuid.uuid4().hex[:6]}"
    state_dir = tempfile.mkdtemp(prefix="fxbench-cni-")
    configs = _configs(state_dir)
    pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-cni-{uuid.uuid4().hex[:8]}")
    configs["l2_port"] = {**configs["l2"], "pinDir": pin_dir}
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    subprocess.run(["ip", "netns", "add", netns], check=True)
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_PATH": CNI_PATH, "CNI_IFNAME": "eth1"}
    base_env["CNI_NETNS"] = f"/run/netns/{netns}"
    dataplane = Dataplane(pin_dir, session_capacity=1024)
    try:
        dataplane.ensure_xc(_BENCH_XC, maglev_table_size=1021)
        for round_index in range(rounds + WARMUP_ROUNDS):
            container_id = f"fxbench{uuid.uuid4().hex[:12]}"
            env = {**base_env, "CNI_CONTAINERID": container_id}
            timings = {
                "python_startup": _timed([sys.executable, "-c", "pass"], env, b""),
                "static_ipam_add": _timed(
                    [static],
                    {**env, "CNI_COMMAND": "ADD"},
                    json.dumps({**configs["l3"], "cniVersion": "1.0.0"}).encode(),
                ),
            }
            for mode in ("l2", "l3"):
                stdin = json.dumps(configs[mode]).encode()
                timings[f"add_{mode}"] = _timed([plugin], {**env, "CNI_COMMAND": "ADD"}, stdin)
                timings[f"del_{mode}"] = _timed([plugin], {**env, "CNI_COMMAND": "DEL"}, stdin)
            timings["del_l2_port"] = _del_of_a_port(plugin, env, configs["l2_port"], dataplane)
            # Same-round differences cancel most of the machine's drift.
            timings["add_l2_minus_startup"] = timings["add_l2"] - timings["python_startup"]
            timings["add_l3_minus_startup"] = timings["add_l3"] - timings["python_startup"]
            if round_index >= WARMUP_ROUNDS:
                for kind, value in timings.items():
                    samples[kind].append(value)
    finally:
        dataplane.destroy()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
    summaries = {kind: summary(values) for kind, values in samples.items()}
    return {
        "unit": "ms",
        "rounds": rounds,
        "loadavg_after": os.getloadavg(),
        "target_add_ms": ADD_TARGET_MS,
        "summaries": summaries,
        "samples": samples,
        "add_within_target": all(summaries[k]["median"] <= ADD_TARGET_MS for k in ("add_l2", "add_l3")),
    }


def run(ctx: BenchContext) -> dict[str, Any]:
    """Entry point for `flexsfc bench` (flexsfc.bench.harness section "cni_latency")."""
    started = time.monotonic()
    return section_result(ctx, "cni_latency", measure(ctx.pick(10, 30)), started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (after 2 warm-up rounds)")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    args = parser.parse_args(argv)
    result = measure(args.rounds)
    print(f"flexsfc-cni call latency, {args.rounds} interleaved rounds (ms, fork+exec to exit):")
    print(f"{'call':<22}{'median':>8}{'p25':>8}{'p75':>8}{'min':>8}{'max':>8}")
    for kind in KINDS:
        s = result["summaries"][kind]
        print(f"{kind:<22}" + "".join(f"{s[k]:>8.1f}" for k in ("median", "p25", "p75", "min", "max")))
    verdict = "within" if result["add_within_target"] else "ABOVE"
    print(f"median ADD {verdict} the {ADD_TARGET_MS:.0f} ms target")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
