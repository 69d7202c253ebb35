"""Latency of flexsfc-cni calls as a runtime sees them (fork/exec to exit): through the node shim to
the agent, against the Python plugin executable run directly (one process per call).

Interleaved rounds (the machine drifts; which path goes first alternates at random), each timing:

- the Python plugin (`flexsfc-cni` console script), the keys this section always had: the bare
  interpreter start-up (`python -c pass`, the floor every Python plugin pays), Debian's `static`
  IPAM plugin alone, ADD and DEL for an L2 attachment and for an L3 one (`static`, dual stack,
  cniVersion 1.1.0), and the DEL of an L2 attachment whose veth is a port of a pinned data plane
  (DEL marks it leaving first);
- the same calls through the static shim (`shim_*`) to an agent serving the CNI socket in this
  process (flexsfc.agent.cni_server with flexsfc.cni.dispatch, as `flexsfc agent --local` and the
  local runtime's supervisor run them), and the shim's VERSION (answered by the shim alone: the
  floor of any call through it);
- the kernel's share of a DEL (`kernel_*`, in-process netlink, no plugin): deleting a veth pair
  from the host end (what DEL does), from the pod end inside its namespace, and a veth pair whose
  pod end is in a namespace that is deleted with it.

Targets: the shim's ADD and DEL medians at most 20 ms each (issue 18); the Python plugin's ADD at
most 150 ms (the older target). `ratios` are Python median / shim median per call.

    python -m flexsfc.bench.cni_latency [--rounds 20] [--json out.json]
"""

import argparse
import functools
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

from flexsfc.agent.cni_server import CniServer
from flexsfc.bench.context import BenchContext, section_result
from flexsfc.bench.stats import summary
from flexsfc.cni.config import NodeConf, node_environment
from flexsfc.cni.dispatch import handle
from flexsfc.cni.shim.build import ensure_built
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing import netlab

ADD_TARGET_MS = 150.0  # the Python plugin's
SHIM_TARGET_MS = 20.0  # ADD and DEL through the shim (issue 18)
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
    "shim_version",
    "shim_add_l2",
    "shim_del_l2",
    "shim_add_l3",
    "shim_del_l3",
    "shim_del_l2_port",
    "kernel_veth_del_host",
    "kernel_veth_del_in_pod",
    "kernel_netns_del_with_veth",
)
CALLS = ("add_l2", "del_l2", "add_l3", "del_l3", "del_l2_port")


def plugin_executable() -> str:
    return str(Path(sys.executable).with_name("flexsfc-cni"))


def _static_plugin() -> str:
    for directory in CNI_PATH.split(":"):
        candidate = os.path.join(directory, "static")
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("the static IPAM plugin is not installed (Debian containernetworking-plugins)")


def _configs() -> dict[str, dict[str, Any]]:
    # Network configurations only: the state and pin directories are the node's to choose, and come
    # from the plugin's environment (flexsfc.cni.config.node_environment).
    base = {"cniVersion": "1.1.0", "type": "flexsfc-cni", "mtu": 1500}
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


def _round(
    plugin: str,
    shim: str,
    static: str,
    configs: dict[str, dict[str, Any]],
    dataplane: Dataplane,
    envs: dict[str, dict[str, str]],
    pin_dir: str,
) -> dict[str, float]:
    """One round's timings of every kind (ms)."""
    container_id = f"fxbench{uuid.uuid4().hex[:12]}"
    env = {**envs["python"], "CNI_CONTAINERID": container_id}
    timings = {
        "python_startup": _timed([sys.executable, "-c", "pass"], env, b""),
        "static_ipam_add": _timed(
            [static],
            {**env, "CNI_COMMAND": "ADD"},
            json.dumps({**configs["l3"], "cniVersion": "1.0.0"}).encode(),
        ),
        "shim_version": _timed([shim], {**envs["shim"], "CNI_COMMAND": "VERSION"}, b"{}"),
    }
    # Which path goes first alternates, so neither always runs on a warmer machine.
    paths = [("", plugin, envs["python"]), ("shim_", shim, envs["shim"])]
    if uuid.uuid4().int & 1:
        paths.reverse()
    for label, executable, path_env in paths:
        call_env = {**path_env, "CNI_CONTAINERID": f"fxbench{uuid.uuid4().hex[:12]}"}
        for mode in ("l2", "l3"):
            stdin = json.dumps(configs[mode]).encode()
            timings[f"{label}add_{mode}"] = _timed([executable], {**call_env, "CNI_COMMAND": "ADD"}, stdin)
            timings[f"{label}del_{mode}"] = _timed([executable], {**call_env, "CNI_COMMAND": "DEL"}, stdin)
        # The Python plugin marks leaving in the data plane its environment names; the shim's agent
        # in the one of its node settings (the same pin directory).
        port_env = {**call_env, "CNI_CONTAINERID": f"fxbench{uuid.uuid4().hex[:12]}"}
        if not label:
            port_env |= node_environment(pin_dir=pin_dir)
        timings[f"{label}del_l2_port"] = _del_of_a_port(executable, port_env, configs["l2"], dataplane)
    timings |= _kernel_deletions(envs["python"]["CNI_NETNS"])
    # Same-round differences cancel most of the machine's drift.
    timings["add_l2_minus_startup"] = timings["add_l2"] - timings["python_startup"]
    timings["add_l3_minus_startup"] = timings["add_l3"] - timings["python_startup"]
    return timings


def _kernel_deletions(netns_file: str) -> dict[str, float]:
    """What deleting a pod's veth pair costs in the kernel (ms), without any plugin around it."""
    from pyroute2 import IPRoute, NetNS, netns

    name = f"fxbk{uuid.uuid4().hex[:8]}"
    timings: dict[str, float] = {}
    with IPRoute() as ipr, NetNS(os.path.basename(netns_file)) as pod:
        # From the host end: what CNI DEL does (RTM_DELLINK, unregistering both devices).
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth9", "net_ns_fd": netns_file})
        index = ipr.link_lookup(ifname=name)[0]
        started = time.perf_counter()
        ipr.link("del", index=index)
        timings["kernel_veth_del_host"] = (time.perf_counter() - started) * 1000
        # From the pod end, inside the pod's namespace: the same pair, the same unregistration.
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth9", "net_ns_fd": netns_file})
        (peer,) = pod.link_lookup(ifname="eth9")
        started = time.perf_counter()
        pod.link("del", index=peer)
        timings["kernel_veth_del_in_pod"] = (time.perf_counter() - started) * 1000
    # The namespace going (what the runtime does after DEL): the kernel removes the pair with it.
    # `ip netns del` only unmounts; the namespace's devices go in the kernel's cleanup work, after
    # the call returns, so this times the call, not the deletion.
    scratch = f"fxbk-{uuid.uuid4().hex[:8]}"
    netns.create(scratch)
    try:
        with IPRoute() as ipr:
            path = f"/run/netns/{scratch}"
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth9", "net_ns_fd": path})
    finally:
        started = time.perf_counter()
        netns.remove(scratch)
        timings["kernel_netns_del_with_veth"] = (time.perf_counter() - started) * 1000
    return timings


def measure(rounds: int = 20) -> dict[str, Any]:
    """Per-call wall time in milliseconds for every kind, ``rounds`` interleaved rounds."""
    if os.geteuid() != 0:
        raise PermissionError("needs root (network namespaces)")
    plugin = plugin_executable()
    shim = str(ensure_built())
    static = _static_plugin()
    workdir = tempfile.mkdtemp(prefix="fxbc")  # short: a unix socket path has at most 107 bytes
    state_dir = os.path.join(workdir, "state")
    socket_path = os.path.join(workdir, "cni.sock")
    configs = _configs()
    pin_dir = netlab.unique_pin_dir("bench-cni")
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    # The agent, in this process: the node's settings are its own (records in state_dir, leaving
    # marks in the bench's data plane), as the local runtime's supervisor serves its pods.
    node = NodeConf(state_dir=state_dir, pin_dir=pin_dir, kubeconfig=None)
    server = CniServer(socket_path, functools.partial(handle, node=node), queue_interval=0)
    try:
        with (
            netlab.private_netns("cni", prefix="fxbench") as netns,
            netlab.dataplane_at(pin_dir, session_capacity=1024) as dataplane,
        ):
            base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_PATH": CNI_PATH}
            base_env |= {"CNI_IFNAME": "eth1", "CNI_NETNS": f"/run/netns/{netns}"}
            envs = {
                "python": base_env | node_environment(state_dir=state_dir),
                # The shim carries only CNI_* to the agent; these two tell it where the agent is.
                "shim": base_env | {"FLEXSFC_CNI_SOCKET": socket_path, "FLEXSFC_CNI_DELETE_QUEUE": workdir},
            }
            dataplane.ensure_xc(_BENCH_XC, maglev_table_size=1021)
            server.start()
            for round_index in range(rounds + WARMUP_ROUNDS):
                timings = _round(plugin, shim, static, configs, dataplane, envs, pin_dir)
                if round_index >= WARMUP_ROUNDS:
                    for kind, value in timings.items():
                        samples[kind].append(value)
    finally:
        server.stop()
        netlab.remove_pin_dir(pin_dir)
        shutil.rmtree(workdir, ignore_errors=True)
    summaries = {kind: summary(values) for kind, values in samples.items()}
    ratios = {call: _ratio(summaries[call]["median"], summaries[f"shim_{call}"]["median"]) for call in CALLS}
    return {
        "unit": "ms",
        "rounds": rounds,
        "loadavg_after": os.getloadavg(),
        "target_add_ms": ADD_TARGET_MS,
        "target_shim_ms": SHIM_TARGET_MS,
        "summaries": summaries,
        "samples": samples,
        "ratios": ratios,
        "add_within_target": all(
            _at_most(summaries[k]["median"], ADD_TARGET_MS) for k in ("add_l2", "add_l3")
        ),
        "shim_within_target": {
            call: _at_most(summaries[f"shim_{call}"]["median"], SHIM_TARGET_MS)
            for call in ("add_l2", "del_l2", "add_l3", "del_l3")
        },
    }


def _ratio(slow: float | int | None, fast: float | int | None) -> float | None:
    return None if slow is None or not fast else round(slow / fast, 1)


def _at_most(value: float | int | None, bound: float) -> bool:
    return value is not None and value <= bound


def run(ctx: BenchContext) -> dict[str, Any]:
    """Entry point for `flexsfc bench` (flexsfc.bench.harness section "cni_latency")."""
    started = time.monotonic()
    return section_result(ctx, "cni_latency", measure(ctx.pick(10, 30)), started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexsfc.bench.cni_latency", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (after 2 warm-up rounds)")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    args = parser.parse_args(argv)
    result = measure(args.rounds)
    print(f"flexsfc-cni call latency, {args.rounds} interleaved rounds (ms, fork+exec to exit):")
    print(f"{'call':<28}{'median':>8}{'p25':>8}{'p75':>8}{'min':>8}{'max':>8}")
    for kind in KINDS:
        s = result["summaries"][kind]
        print(f"{kind:<28}" + "".join(f"{s[k]:>8.1f}" for k in ("median", "p25", "p75", "min", "max")))
    print("Python plugin / shim, medians: " + ", ".join(f"{c} {r}x" for c, r in result["ratios"].items()))
    verdict = "within" if result["add_within_target"] else "ABOVE"
    print(f"Python plugin: median ADD {verdict} the {ADD_TARGET_MS:.0f} ms target")
    shim = ", ".join(f"{c} {'ok' if ok else 'ABOVE'}" for c, ok in result["shim_within_target"].items())
    load = ", ".join(f"{v:.2f}" for v in result["loadavg_after"])
    print(f"shim medians against the {SHIM_TARGET_MS:.0f} ms target: {shim} (load average after: {load})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
