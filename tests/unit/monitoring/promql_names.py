"""What deploy/monitoring may name: the series the exporter serves, and the metrics a PromQL query names.

`served()` runs the exporter's collectors (flexsfc.metrics.exporter.Exporter) against a static data plane
that has every kind of reading (ports of a labelled replica, both sides of a cross-connection, every
drop reason and event the data plane's enums define, a reconcile report with an error) and returns,
per served sample name, the label names and label values it carries. `metric_names(expr)` parses the
metric names out of a PromQL expression; `selectors(expr)` its `metric{matchers}` selectors.
"""

import re
from dataclasses import dataclass, field

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.dataplane import maps
from flexsfc.dataplane.api import PortStats, ReplicaPort, ReplicaState
from flexsfc.metrics.exporter import Exporter
from flexsfc.metrics.labels import PortIndex
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Mode, Side, XcSide

# Series Prometheus makes itself for every target (not the exporter's): the only ones allowed besides.
SCRAPE_SERIES = {"up"}
# Labels Prometheus attaches to every series of a target.
TARGET_LABELS = {"instance", "job"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, aggregations, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b(offset|@)\s*[-\w.]+", " ", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match.group(1)
        if text[match.end() :].lstrip().startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or aggregation call, or an operator keyword
        names.add(name)
    return names


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, op, value)]) of every `metric{...}` selector in the expression."""
    return [(m.group(1), _MATCHER.findall(m.group(2))) for m in _SELECTOR.finditer(expr)]


def label_values_metric(query: str) -> str | None:
    """The series expression of a Grafana `label_values(series, label)` variable query (None: other)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*", query, re.S)
    return match.group(1) if match else None


@dataclass
class Served:
    """Per served sample name: its label names, and each label's values."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    values: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    @property
    def names(self) -> set[str]:
        return set(self.labels)


class FullDataplane:
    """A data plane with one of everything the exporter reads."""

    def port_stats(self) -> dict[int, PortStats]:
        return {10: PortStats(10, 1, 64, 2, 128, 1), 20: PortStats(20, 2, 128, 1, 64, 0)}

    def list_xcs(self) -> dict[str, int]:
        return {"ns1/demo-client-fw": 0}

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        if side is Side.A:
            return [ReplicaPort(10, "uid-client-0")]
        return [ReplicaPort(20, "uid-fw-0"), ReplicaPort(30, "uid-fw-1", ReplicaState.DRAINING)]

    def drop_stats(self) -> dict[str, int]:
        return {reason.name.lower(): 1 for reason in maps.DropReason}

    def event_stats(self) -> dict[str, int]:
        return {event.name.lower(): 1 for event in maps.Event}

    def session_count(self, xc: str | None = None) -> int:
        return 1

    def session_counts(self) -> dict[str, int]:
        return {"ns1/demo-client-fw": 1}

    def session_capacities(self) -> dict[str, int]:
        return {"ipv4": 1048576, "ipv6": 262144}

    def sessions_expired(self) -> int:
        return 1


def _side(nf: str, ifname: str) -> XcSide:
    return XcSide(nf=nf, interface=ifname, network=f"net-{nf}", mode=Mode.L2, mac="02:00:00:00:00:01")


def served() -> Served:
    from flexsfc.agent.reconciler import ReconcileReport, StepTiming

    xc = CrossConnectionSpec("demo-client-fw", "demo", "ns1", _side("client", "eth1"), _side("fw", "eth1"))
    replicas = [
        NfReplica(
            f"uid-{pod}",
            "ns1",
            pod,
            nf,
            phase,
            (AttachmentRecord("c", "eth1", "/n", "net", f"h{index}", index, "02:00:00:00:00:01", "L2"),),
        )
        for pod, nf, phase, index in (
            ("client-0", "client", ReplicaPhase.RUNNING, 10),
            ("fw-0", "fw", ReplicaPhase.RUNNING, 20),
            ("fw-1", "fw", ReplicaPhase.TERMINATING, 30),
        )
    ]
    index = PortIndex()
    index.update([xc], replicas)
    exporter = Exporter.create(FullDataplane(), index)  # type: ignore[arg-type]
    for errors, changed in (([], True), (["ns1/demo-client-fw: failed"], False)):
        report = ReconcileReport(
            sides_updated=["x/A"] if changed else [], steps=[StepTiming("set_replicas", "x/A", 300_000)]
        )
        report.errors.extend(errors)
        report.total_ns = 400_000
        exporter.reconcile.observe("test", report)
    result = Served()
    text = generate_latest(exporter.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result.labels.setdefault(sample.name, set()).update(sample.labels)
            per_label = result.values.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                per_label.setdefault(label, set()).add(value)
    return result
