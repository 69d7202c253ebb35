"""Rates from two readings of the data plane's counters: per port, then per NF replica (pod).

Used by `flexsfc status` (packets/bytes per second per replica) and by the local autoscaler (the pps
its HPA algorithm averages). Like Prometheus' rate(), a counter that went backwards (the port was
recreated) counts from zero, and a port without an earlier reading has no rate yet.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexsfc.dataplane.api import PortStats
from flexsfc.metrics.labels import PortLabel


@dataclass(frozen=True)
class PortRate:
    ifindex: int
    rx_pps: float  # delivered to the replica
    tx_pps: float  # emitted by the replica
    rx_bps: float  # bytes per second
    tx_bps: float


@dataclass(frozen=True)
class ReplicaRate:
    namespace: str
    pod: str
    nf: str
    rx_pps: float
    tx_pps: float
    rx_bps: float
    tx_bps: float
    interfaces: int  # how many of its ports had a rate


def _delta(new: int, old: int) -> int:
    return new - old if new >= old else new  # reset: the port was recreated with fresh counters


def port_rates(
    before: Mapping[int, PortStats], after: Mapping[int, PortStats], seconds: float
) -> dict[int, PortRate]:
    if seconds <= 0:
        raise ValueError(f"seconds between readings must be > 0 (got {seconds})")
    rates: dict[int, PortRate] = {}
    for ifindex, new in after.items():
        old = before.get(ifindex)
        if old is None:
            continue
        rates[ifindex] = PortRate(
            ifindex,
            rx_pps=_delta(new.to_port_packets, old.to_port_packets) / seconds,
            tx_pps=_delta(new.from_port_packets, old.from_port_packets) / seconds,
            rx_bps=_delta(new.to_port_bytes, old.to_port_bytes) / seconds,
            tx_bps=_delta(new.from_port_bytes, old.from_port_bytes) / seconds,
        )
    return rates


def replica_rates(rates: Mapping[int, PortRate], labels: Mapping[int, PortLabel]) -> dict[str, ReplicaRate]:
    """Sum the port rates of each pod ("namespace/pod" -> rate): all traffic the replica handles."""
    totals: dict[str, ReplicaRate] = {}
    for ifindex, rate in rates.items():
        label = labels.get(ifindex)
        if label is None:
            continue
        key = f"{label.namespace}/{label.pod}"
        prev = totals.get(key)
        totals[key] = ReplicaRate(
            namespace=label.namespace,
            pod=label.pod,
            nf=label.nf,
            rx_pps=rate.rx_pps + (prev.rx_pps if prev else 0.0),
            tx_pps=rate.tx_pps + (prev.tx_pps if prev else 0.0),
            rx_bps=rate.rx_bps + (prev.rx_bps if prev else 0.0),
            tx_bps=rate.tx_bps + (prev.tx_bps if prev else 0.0),
            interfaces=1 + (prev.interfaces if prev else 0),
        )
    return totals


class RateSampler:
    """Keeps the previous reading; each `sample(stats, now)` returns rates since then."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[int, PortStats]] | None = None

    def sample(self, stats: Mapping[int, PortStats], now: float) -> dict[int, PortRate]:
        previous, self._last = self._last, (now, dict(stats))
        if previous is None or now <= previous[0]:
            return {}
        return port_rates(previous[1], stats, now - previous[0])


STATUS_COUNTERS = {"rxPps": "toPackets", "rxBps": "toBytes", "txPps": "fromPackets", "txBps": "fromBytes"}


def status_rates(
    before: Mapping[str, Any], after: Mapping[str, Any], seconds: float
) -> dict[str, dict[str, float]]:
    """Per-pod rates from two local-runtime status documents taken `seconds` apart.

    Returns pod name -> {"rxPps", "rxBps", "txPps", "txBps"} (rx = delivered to the pod) for pods
    present in both; `flexsfc status` shows these next to the counters. When both documents stamp
    their counter reading ("countersTime", seconds on one clock), that interval is used instead.
    """
    stamps = (before.get("countersTime"), after.get("countersTime"))
    if stamps[0] is not None and stamps[1] is not None and float(stamps[1]) > float(stamps[0]):
        seconds = float(stamps[1]) - float(stamps[0])
    if seconds <= 0:
        raise ValueError(f"seconds between readings must be > 0 (got {seconds})")
    old = {pod["name"]: pod for pod in before.get("pods", [])}
    rates: dict[str, dict[str, float]] = {}
    for pod in after.get("pods", []):
        prev = old.get(pod["name"])
        if prev is None:
            continue
        rates[pod["name"]] = {
            rate: _delta(int(pod.get(counter, 0)), int(prev.get(counter, 0))) / seconds
            for rate, counter in STATUS_COUNTERS.items()
        }
    return rates
