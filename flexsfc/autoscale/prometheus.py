"""Per-pod packet rates from a Prometheus server, queried the way prometheus-adapter does.

deploy/autoscaling/prometheus-adapter-values.yaml turns `flexsfc_nf_rx_packets_total` into the custom
metric `flexsfc_nf_rx_packets_per_second` with a metricsQuery template (:data:`ADAPTER_METRICS_QUERY`,
a copy of the rule's; a unit test keeps them equal): in essence `sum by (pod) (rate(series{namespace=..,
pod=~"a|b|c"}[1m]))`, also reading series whose NF labels a scrape without honor_labels renamed to
`exported_namespace`/`exported_pod`. For an HPA on pods the adapter fills in the series name, the
namespace and pod matchers for the pods the HPA asks about (`<<.LabelMatchers>>`, and the same names
through `.LabelValuesByName`) and groups by the pod label (`<<.GroupBy>>`). :func:`adapter_query`
renders the template the same way (pod names escaped as regex literals, which the adapter leaves to
the names being DNS labels); :class:`PrometheusPodRates` sends it to Prometheus' HTTP API
(`/api/v1/query`) and returns one rate per pod. A pod with no series (not scraped yet, or a single
sample so far) gets no value, which the HPA algorithm treats as a missing metric, as the Kubernetes
controller does.
"""

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RX_PACKETS = "flexsfc_nf_rx_packets_total"
ADAPTER_WINDOW = "1m"  # the adapter rule's range
# The adapter rule's metricsQuery with prometheus-adapter's template fields (test: the same as the rule).
ADAPTER_METRICS_QUERY = (
    "sum by (<<.GroupBy>>) (\n"
    '  rate(<<.Series>>{<<.LabelMatchers>>,exported_pod=""}[1m])\n'
    "  or\n"
    "  label_replace(label_replace(\n"
    '    rate(<<.Series>>{exported_namespace=~"<<range $i, $v := index .LabelValuesByName "namespace">>'
    '<<if $i>>|<<end>><<$v>><<end>>",exported_pod=~"<<range $i, $v := index .LabelValuesByName "pod">>'
    '<<if $i>>|<<end>><<$v>><<end>>"}[1m]),\n'
    '    "namespace", "$1", "exported_namespace", "(.+)"),\n'
    '    "pod", "$1", "exported_pod", "(.+)")\n'
    ")"
)
GROUP_BY = "pod"  # the label of the resource asked for
# `a|b|c` of one label's requested values, as the rule's Go template writes it.
_LABEL_VALUES = re.compile(
    r'<<range \$i, \$v := index \.LabelValuesByName "([a-z_]+)">><<if \$i>>\|<<end>><<\$v>><<end>>'
)
_WINDOW_UNITS = ("ms", "s", "m", "h", "d", "w", "y")
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


class PrometheusError(RuntimeError):
    """The query could not be run or Prometheus answered an error."""


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex_literal(value: str) -> str:
    """`value` as an RE2 pattern matching exactly it (pod names only use '.' and '-' besides alnum)."""
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in value)


def check_window(window: str) -> str:
    """A PromQL duration such as 30s, 1m, 1m30s; ValueError otherwise."""
    rest = window
    if not rest:
        raise ValueError("empty rate window")
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            raise ValueError(f"rate window {window!r}: not a Prometheus duration (e.g. 30s, 1m)")
        rest = rest[digits:]
        unit = next((u for u in _WINDOW_UNITS if rest.startswith(u)), None)
        if unit is None:
            raise ValueError(f"rate window {window!r}: not a Prometheus duration (e.g. 30s, 1m)")
        rest = rest[len(unit) :]
    return window


def adapter_query(
    metric: str,
    namespace: str,
    pods: Iterable[str],
    window: str = ADAPTER_WINDOW,
    template: str = ADAPTER_METRICS_QUERY,
) -> str:
    """The query prometheus-adapter sends for `metric`'s per-second rate of `pods` in `namespace`."""
    names = sorted(set(pods))
    if not names:
        raise ValueError("no pods to query")
    values = {"namespace": [namespace], "pod": names}

    def alternatives(label: str) -> str:
        # Inside a PromQL string: the regex's backslashes doubled, as promql_string() does.
        return promql_string("|".join(regex_literal(v) for v in values[label]))[1:-1]

    query = template.replace("[1m]", f"[{check_window(window)}]")
    query = _LABEL_VALUES.sub(lambda m: alternatives(m.group(1)), query)
    matchers = f'namespace={promql_string(namespace)},pod=~"{alternatives("pod")}"'
    query = query.replace("<<.Series>>", metric).replace("<<.GroupBy>>", GROUP_BY)
    query = query.replace("<<.LabelMatchers>>", matchers)
    if "<<" in query:
        raise ValueError(f"unsupported prometheus-adapter template field in {template!r}")
    return query


def parse_vector(response: Mapping[str, Any]) -> dict[str, float]:
    """pod label -> value of an instant-vector answer of /api/v1/query; NaN/Inf left out."""
    if response.get("status") != "success":
        raise PrometheusError(
            f"query failed: {response.get('errorType', 'error')}: {response.get('error', response)}"
        )
    data = response.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"expected an instant vector, got {data.get('resultType')!r}")
    values: dict[str, float] = {}
    for sample in data.get("result", []):
        labels = sample.get("metric", {})
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(f"malformed sample {sample!r}") from exc
        if math.isfinite(value):
            values[labels.get(GROUP_BY, "")] = value
    return values


@dataclass
class PrometheusClient:
    """The instant-query endpoint of one Prometheus server (`url` is its base, e.g. http://host:9090)."""

    url: str
    timeout: float = 10.0

    def query(self, promql: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            self.url.rstrip("/") + "/api/v1/query",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                answer: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            # Prometheus answers bad queries with 400/422 and a JSON error body.
            try:
                answer = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"{self.url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"{self.url}: {exc}") from exc
        if answer.get("status") != "success":
            kind, error = answer.get("errorType", "error"), answer.get("error", answer)
            raise PrometheusError(f"{self.url}: {kind}: {error} (query {promql})")
        return answer


@dataclass
class PrometheusPodRates:
    """Per-pod rate of an exported counter (default: packets delivered to the replica, per second)."""

    client: PrometheusClient
    metric: str = RX_PACKETS
    window: str = ADAPTER_WINDOW

    def __post_init__(self) -> None:
        check_window(self.window)

    @classmethod
    def at(cls, url: str, *, window: str = ADAPTER_WINDOW, timeout: float = 10.0) -> "PrometheusPodRates":
        return cls(PrometheusClient(url, timeout), window=window)

    def queries(self, pods: Iterable[tuple[str, str]]) -> dict[str, str]:
        """namespace -> its adapter query, for the (namespace, pod) pairs (the adapter asks per namespace)."""
        by_namespace: dict[str, list[str]] = defaultdict(list)
        for namespace, pod in pods:
            by_namespace[namespace].append(pod)
        return {
            namespace: adapter_query(self.metric, namespace, names, self.window)
            for namespace, names in sorted(by_namespace.items())
        }

    def rates(self, pods: Iterable[tuple[str, str]], at: float | None = None) -> dict[tuple[str, str], float]:
        """(namespace, pod) -> per-second rate for the pods Prometheus has a rate for."""
        wanted = set(pods)
        found: dict[tuple[str, str], float] = {}
        for namespace, promql in self.queries(wanted).items():
            for pod, value in parse_vector(self.client.query(promql, at)).items():
                found[(namespace, pod)] = value
        return {key: value for key, value in found.items() if key in wanted}
