"""Per-packet cost of the cross-connection program as its session table fills up to 1M entries.

One data plane with the default session capacity (1M confirmed sessions; unconfirmed flows have an
LRU of their own) and one cross-connection in a private network namespace. The confirmed table is
filled in steps with distinct sessions of the same cross-connection (written from user space in
batches: the kernel stores them as the program would), and at every step BPF_PROG_TEST_RUN measures,
in the kernel:

- an established flow (session hit), averaged over `repeat` runs, minus a 2-instruction reference
  program run the same way at the same step (test_run's own overhead);
- a packet that starts a new flow (its first packet: a miss in the confirmed table, an insert into
  the unconfirmed LRU, which evicts its least recently used entry once full), averaged over distinct
  flows run once each (coarse: 1 ns clock).
"""

import ctypes
import os
import random
import statistics
import time
from typing import Any

import numpy as np

from flexsfc.bench.context import BenchContext, section_result
from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.model.constants import DEFAULT_SESSION_CAPACITY
from flexsfc.model.types import Side
from flexsfc.testing import bpfasm, frames, netlab
from flexsfc.util.netns import in_netns

BATCH = 65536


def _template(dp: Any) -> tuple[np.ndarray, np.ndarray]:
    """Raw key and value of the one session the program created: the fill copies them."""
    fd = dp.map_fd("sessions")
    info = libbpf.map_info(fd)
    key_type = ctypes.c_uint8 * info.key_size
    keys = libbpf.map_keys(fd, key_type)
    if len(keys) != 1:
        raise RuntimeError(f"expected the one template session in the table, found {len(keys)}")
    # The fill writes sessions the program did not confirm, so the counters do not see them: the
    # rows report what was inserted.
    value = (ctypes.c_uint8 * info.value_size)()
    libbpf.map_lookup(fd, keys[0], value)
    return np.frombuffer(bytes(keys[0]), dtype=np.uint8), np.frombuffer(bytes(value), dtype=np.uint8)


def _fill(dp: Any, template: tuple[np.ndarray, np.ndarray], count: int, rng: np.random.Generator) -> None:
    """Insert `count` distinct sessions shaped like `template` but with random endpoints (batched)."""
    fd = dp.map_fd("sessions")
    key0, value0 = template
    # `sessions` holds IPv4/ARP keys (maps.FlowKey4); IPv6 keys (maps.FlowKey) live in `sessions6`.
    key_type = maps.FlowKey4 if len(key0) == ctypes.sizeof(maps.FlowKey4) else maps.FlowKey
    lo_off, hi_off = key_type.addr_lo.offset, key_type.addr_hi.offset
    width = key_type.addr_lo.size
    opts = libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(libbpf.BpfMapBatchOpts))
    done = 0
    while done < count:
        n = min(BATCH, count - done)
        keys = np.tile(key0, (n, 1))
        # Random endpoints: distinct from each other and from the measured flows.
        keys[:, lo_off : lo_off + width] = rng.integers(0, 256, size=(n, width), dtype=np.uint8)
        keys[:, hi_off : hi_off + width] = rng.integers(0, 256, size=(n, width), dtype=np.uint8)
        values = np.ascontiguousarray(np.tile(value0, (n, 1)))
        counter = ctypes.c_uint32(n)
        rc = libbpf.lib().bpf_map_update_batch(
            fd,
            ctypes.c_void_p(keys.ctypes.data),
            ctypes.c_void_p(values.ctypes.data),
            ctypes.byref(counter),
            ctypes.byref(opts),
        )
        if rc < 0:
            raise OSError(-rc, f"bpf_map_update_batch on sessions: {os.strerror(-rc)}")
        done += counter.value


def _measure_step(
    dp: Any, ref_fd: int, port: int, hit_frame: bytes, repeat: int, new_flows: int, rng: random.Random
) -> dict[str, float]:
    libbpf.prog_test_run(dp.prog_fd, hit_frame, ifindex=port, repeat=1)  # (re)create the session
    hits, refs = [], []
    for _ in range(3):  # interleaved with the reference, medians: the machine drifts
        refs.append(libbpf.prog_test_run(ref_fd, hit_frame, ifindex=port, repeat=repeat).duration_ns)
        hits.append(libbpf.prog_test_run(dp.prog_fd, hit_frame, ifindex=port, repeat=repeat).duration_ns)
    creates = []
    for _ in range(new_flows):
        src = f"10.{rng.randrange(4, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        frame = frames.flow_frame(src, "10.99.0.1", frames.UDP, rng.randrange(1024, 65535), 53)
        creates.append(libbpf.prog_test_run(dp.prog_fd, frame, ifindex=port, repeat=1).duration_ns)
    hit, ref = statistics.median(hits), statistics.median(refs)
    return {
        "hit_ns_raw": hit,
        "reference_ns": ref,
        "hit_ns": hit - ref,
        "new_session_ns": statistics.mean(creates),
    }


def run(ctx: BenchContext) -> dict[str, Any]:
    started = time.monotonic()
    capacity = DEFAULT_SESSION_CAPACITY
    levels = ctx.pick([1, 10_000, 100_000], [1, 1_000, 10_000, 100_000, 250_000, 500_000, 750_000, capacity])
    repeat = ctx.pick(20_000, 200_000)
    new_flows = ctx.pick(200, 1000)
    rng = random.Random(ctx.seed)
    nprng = np.random.default_rng(ctx.seed)
    rows: list[dict[str, Any]] = []
    with (
        netlab.private_netns("fill", prefix="fbench") as ns,
        in_netns(ns),
        netlab.private_dataplane("bench-fill", session_capacity=capacity) as dp,
    ):
        ref_fd = bpfasm.load_constant_program(0)
        try:
            host = netlab.Host(ns)
            a, b = host.add_port().ifindex, host.add_port().ifindex
            dp.ensure_xc("bench-fill")
            dp.set_replicas("bench-fill", Side.A, [ReplicaPort(a, "a")])
            dp.set_replicas("bench-fill", Side.B, [ReplicaPort(b, "b")])
            hit_frame = frames.flow_frame("10.2.0.1", "10.99.0.1", frames.UDP, 1000, 53)
            reply = frames.flow_frame("10.99.0.1", "10.2.0.1", frames.UDP, 53, 1000)
            libbpf.prog_test_run(dp.prog_fd, hit_frame, ifindex=a, repeat=1)
            libbpf.prog_test_run(dp.prog_fd, reply, ifindex=b, repeat=1)  # confirms the session
            template = _template(dp)
            filled = 1
            for level in levels:
                if level > filled:
                    _fill(dp, template, level - filled, nprng)
                    filled = level
                ctx.log(f"session_fill: {level} sessions")
                step = _measure_step(dp, ref_fd, a, hit_frame, repeat, new_flows, rng)
                rows.append({"sessions_inserted": level, "sessions_in_table": filled, **step})
        finally:
            os.close(ref_fd)
    data = {
        "capacity": capacity,
        "repeat": repeat,
        "new_flows_per_step": new_flows,
        "rows": rows,
        "series": [
            {
                "label": "established flow (session hit, net of test_run overhead)",
                "sessions": [r["sessions_in_table"] for r in rows],
                "ns_per_packet": [r["hit_ns"] for r in rows],
            },
            {
                "label": "first packet of a new flow (creates a session)",
                "sessions": [r["sessions_in_table"] for r in rows],
                "ns_per_packet": [r["new_session_ns"] for r in rows],
            },
        ],
    }
    return section_result(ctx, "session_fill", data, started)
