"""Flows that change replica on N -> N+1 and N -> N-1: flexsfc's Maglev tables versus modulo hashing.

The PoC picks `replicas[hash % N]` from an array of interfaces; flexsfc looks the hash up in a Maglev
table built by flexsfc.dataplane.maglev.build_table from replica identities. The same flows (random
5-tuples hashed once) go through both, before and after adding or removing one replica (the same
replica for both schemes, chosen at random). A flow "remaps" when it lands on another replica.

This is what happens to every new flow and to every established flow that has no session entry (the
PoC's table full, maps lost on an operator restart). With flexsfc's session table, established flows
do not move at all on scale-out; scale_loss measures that with real packets.
"""

import hashlib
import random
import struct
import time
from typing import Any

import numpy as np

from flexsfc.bench.context import BenchContext, section_result
from flexsfc.model.constants import DEFAULT_MAGLEV_TABLE_SIZE


def flow_hashes(count: int, rng: random.Random) -> np.ndarray:
    """32-bit hashes of `count` random TCP 5-tuples (10.0.0.0/8 clients, one server)."""
    out = np.empty(count, dtype=np.uint64)
    for i in range(count):
        src = rng.getrandbits(24) | (10 << 24)
        sport = rng.randrange(1024, 65536)
        key = struct.pack("!IIHHB", src, 0x0A4D0002, sport, 443, 6)
        out[i] = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")
    return out


def maglev_owner(identities: list[str], hashes: np.ndarray, size: int) -> np.ndarray:
    """Replica identity index (into `identities`' sorted order) for each flow hash."""
    from flexsfc.dataplane.maglev import build_table

    table = build_table(identities, size)
    return table[(hashes % size).astype(np.int64)]


def _maglev_names(identities: list[str], hashes: np.ndarray, size: int) -> np.ndarray:
    ordered = np.array(sorted(identities))
    return ordered[maglev_owner(identities, hashes, size)]


def _modulo_names(array: list[str], hashes: np.ndarray) -> np.ndarray:
    return np.array(array)[(hashes % len(array)).astype(np.int64)]


def compare(before: list[str], after: list[str], hashes: np.ndarray, size: int) -> tuple[float, float]:
    """Share of flows changing replica (Maglev, modulo) when the set goes from `before` to `after`.

    `before`/`after` are the PoC's interface arrays in order (a removed replica leaves the array and
    the ones after it shift down); Maglev only depends on the set.
    """
    maglev = float(np.mean(_maglev_names(before, hashes, size) != _maglev_names(after, hashes, size)))
    modulo = float(np.mean(_modulo_names(before, hashes) != _modulo_names(after, hashes)))
    return maglev, modulo


def run(ctx: BenchContext) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(ctx.seed)
    size = DEFAULT_MAGLEV_TABLE_SIZE
    flows = ctx.pick(20_000, 200_000)
    trials = ctx.pick(3, 10)
    max_replicas = 10
    hashes = flow_hashes(flows, rng)

    def pod() -> str:
        return f"pod-{rng.getrandbits(64):016x}"

    scale_out, scale_in = [], []
    for n in range(1, max_replicas):
        samples = []
        for _ in range(trials):
            before = [pod() for _ in range(n)]
            samples.append(compare(before, [*before, pod()], hashes, size))
        scale_out.append(_row(n, n + 1, samples, ideal=1 / (n + 1)))
    for n in range(2, max_replicas + 1):
        samples = []
        for _ in range(trials):
            before = [pod() for _ in range(n)]
            victim = rng.randrange(n)
            samples.append(compare(before, before[:victim] + before[victim + 1 :], hashes, size))
        scale_in.append(_row(n, n - 1, samples, ideal=1 / n))
    data = {
        "flows": flows,
        "trials": trials,
        "maglev_table_size": size,
        "hash": "blake2b-32 of the 5-tuple, identical for both schemes",
        "scale_out": scale_out,
        "scale_in": scale_in,
    }
    return section_result(ctx, "remap", data, started)


def _row(n_before: int, n_after: int, samples: list[tuple[float, float]], ideal: float) -> dict[str, Any]:
    return {
        "n_before": n_before,
        "n_after": n_after,
        "maglev_remapped": round(float(np.mean([s[0] for s in samples])), 4),
        "modulo_remapped": round(float(np.mean([s[1] for s in samples])), 4),
        "ideal_remapped": round(ideal, 4),
    }
