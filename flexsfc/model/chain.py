"""ServiceFunctionChain objects: parsing and validation of one chain on its own.

The chain controller calls :func:`validate_chain` / :func:`parse_chain` with API objects (dicts), the
manifest loader with YAML documents: both get the same messages.
"""

from typing import Any

from flexsfc.model.constants import (
    ALLOWED_MAGLEV_TABLE_SIZES,
    API_GROUP_VERSION,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_SESSION_TIMEOUTS,
    KIND_CHAIN,
    MAX_SESSION_TIMEOUT,
)
from flexsfc.model.errors import Issue, IssueCollector
from flexsfc.model.names import dns_label_problem, ifname_problem
from flexsfc.model.types import ChainSettings, ChainSpec, NetworkFunctionSpec, SessionTimeouts

DEFAULT_NAMESPACE = "default"


def mapping_field(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """`obj[key]` when it is a mapping, else an empty one: manifests are untrusted YAML, and validation
    reports a wrong shape where it matters rather than failing on the first lookup."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def object_label(kind: str, obj: dict[str, Any]) -> str:
    """ "Kind namespace/name" of a manifest object, as well as it can be told."""
    metadata = mapping_field(obj, "metadata")
    name = metadata.get("name") or "<unnamed>"
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    return f"{kind} {namespace}/{name}"


def validate_chain(obj: dict[str, Any], source: str = "") -> list[Issue]:
    """Every issue of one ServiceFunctionChain object taken alone (errors and warnings)."""
    return parse_chain(obj, source)[1]


def parse_chain(obj: dict[str, Any], source: str = "") -> tuple[ChainSpec | None, list[Issue]]:
    """The ChainSpec of a ServiceFunctionChain object, or None when it has errors; plus all issues."""
    report = IssueCollector(object_label(KIND_CHAIN, obj), source)
    if obj.get("apiVersion") != API_GROUP_VERSION:
        report.error(
            "apiVersion",
            f"is {obj.get('apiVersion')!r}, expected {API_GROUP_VERSION!r}",
            f"set apiVersion: {API_GROUP_VERSION}",
        )
    name, namespace = _metadata(obj, report)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        report.error("spec", "missing required field (or not a mapping)", "add spec.networkFunctions")
        return None, report.issues
    settings = _settings(spec.get("settings"), report)
    nfs = _network_functions(spec.get("networkFunctions"), report)
    _check_links(nfs, spec.get("networkFunctions"), report)
    if report.has_errors or name is None:
        return None, report.issues
    chain = ChainSpec(
        name=name,
        namespace=namespace,
        network_functions=tuple(NetworkFunctionSpec(nf_name, links) for _, nf_name, links in nfs),
        settings=settings,
    )
    return chain, report.issues


def _metadata(obj: dict[str, Any], report: IssueCollector) -> tuple[str | None, str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        report.error("metadata", "missing required field (or not a mapping)", "add metadata.name")
        return None, DEFAULT_NAMESPACE
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    if not isinstance(namespace, str) or dns_label_problem(namespace):
        report.error("metadata.namespace", f"{namespace!r} is not a valid namespace", "use a DNS-1123 label")
        namespace = DEFAULT_NAMESPACE
    name = metadata.get("name")
    if name is None:
        report.error("metadata.name", "missing required field", "give the chain a name")
        return None, namespace
    problem = dns_label_problem(name) if isinstance(name, str) else "must be a string"
    if problem:
        report.error(
            "metadata.name",
            f"{name!r} {problem}",
            "use a DNS-1123 label (it prefixes CrossConnection names), e.g. 'transparent-firewall'",
        )
        return None, namespace
    return name, namespace


def _settings(raw: Any, report: IssueCollector) -> ChainSettings:
    if raw is None:
        return ChainSettings()
    if not isinstance(raw, dict):
        report.error("spec.settings", "must be a mapping", "write settings as key: value pairs or omit it")
        return ChainSettings()
    known = {"maglevTableSize", "sessionTimeouts"}
    for key in raw:
        if key not in known:
            report.error(f"spec.settings.{key}", "unknown setting", f"use one of {sorted(known)}")
    size = raw.get("maglevTableSize", DEFAULT_MAGLEV_TABLE_SIZE)
    if not _is_int(size) or size not in ALLOWED_MAGLEV_TABLE_SIZES:
        report.error(
            "spec.settings.maglevTableSize",
            f"{size!r} is not an allowed Maglev table size (a prime)",
            f"use one of {list(ALLOWED_MAGLEV_TABLE_SIZES)}; at least 100 x the largest replica count",
        )
        size = DEFAULT_MAGLEV_TABLE_SIZE
    return ChainSettings(maglev_table_size=size, session_timeouts=_session_timeouts(raw, report))


def _session_timeouts(raw: dict[str, Any], report: IssueCollector) -> SessionTimeouts:
    """spec.settings.sessionTimeouts: {tcp, udp, icmp, other} in seconds, each optional."""
    path = "spec.settings.sessionTimeouts"
    given = raw.get("sessionTimeouts")
    if given is None:
        return SessionTimeouts()
    if not isinstance(given, dict):
        report.error(path, "must be a mapping", "write e.g. sessionTimeouts: {tcp: 7440, udp: 120}")
        return SessionTimeouts()
    defaults = DEFAULT_SESSION_TIMEOUTS
    values = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            report.error(f"{path}.{key}", "unknown protocol class", f"use one of {sorted(defaults)}")
        elif not _is_int(value) or not 1 <= value <= MAX_SESSION_TIMEOUT:
            report.error(
                f"{path}.{key}",
                f"{value!r} is not a timeout in seconds",
                f"use a whole number of seconds from 1 to {MAX_SESSION_TIMEOUT} (default {defaults[key]})",
            )
        else:
            values[key] = value
    return SessionTimeouts(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# (index in spec.networkFunctions, NF name, valid links) of the entries that parsed.
_ParsedNf = tuple[int, str, dict[str, str]]


def _network_functions(raw: Any, report: IssueCollector) -> list[_ParsedNf]:
    path = "spec.networkFunctions"
    if raw is None:
        report.error(path, "missing required field", "list the chain's NFs: - name: nat, links: {fw: eth1}")
        return []
    if not isinstance(raw, list) or not raw:
        report.error(path, "must be a non-empty list", "list the chain's NFs: - name: nat, links: {...}")
        return []
    parsed: list[_ParsedNf] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(raw):
        entry_path = f"{path}[{index}]"
        if not isinstance(entry, dict):
            report.error(
                entry_path, "must be a mapping with name and links", "write - name: <nf>, links: {...}"
            )
            continue
        name = entry.get("name")
        if name is None:
            report.error(f"{entry_path}.name", "missing required field", "name the network function")
            continue
        problem = dns_label_problem(name) if isinstance(name, str) else "must be a string"
        if problem:
            report.error(
                f"{entry_path}.name",
                f"{name!r} {problem}",
                "use a DNS-1123 label: it is the value of the flexsfc.io/network-function pod label",
            )
            continue
        if name in first_index:
            report.error(
                f"{entry_path}.name",
                f"duplicate NF name {name!r} (already {path}[{first_index[name]}])",
                "give every NF of the chain a distinct name, or merge the two entries",
            )
            continue
        first_index[name] = index
        parsed.append((index, name, _links(entry.get("links"), name, entry_path, report)))
    return parsed


def _links(raw: Any, nf: str, entry_path: str, report: IssueCollector) -> dict[str, str]:
    path = f"{entry_path}.links"
    if raw is None:
        report.warning(
            path, f"NF {nf!r} has no links: it is not connected to the chain", "add its neighbours"
        )
        return {}
    if not isinstance(raw, dict):
        report.error(path, "must be a mapping neighbour NF -> interface", "write links: {<neighbour>: eth1}")
        return {}
    links: dict[str, str] = {}
    used_by: dict[str, str] = {}
    for neighbour, ifname in raw.items():
        link_path = f"{path}.{neighbour}"
        if not isinstance(neighbour, str):
            report.error(link_path, "neighbour must be an NF name (string)", "quote the NF name")
            continue
        if neighbour == nf:
            report.error(
                link_path, f"NF {nf!r} links to itself", "remove the self link; link two distinct NFs"
            )
            continue
        problem = ifname_problem(ifname) if isinstance(ifname, str) else "must be a string"
        if problem:
            report.error(
                link_path,
                f"interface name {ifname!r} {problem}",
                "use a Linux interface name of 1-15 characters without '/', ':' or spaces, e.g. eth1",
            )
            continue
        if ifname in used_by:
            report.error(
                link_path,
                f"interface {ifname!r} of NF {nf!r} is already used for the link to {used_by[ifname]!r}",
                "give each link its own interface (one interface carries exactly one link)",
            )
            continue
        used_by[ifname] = neighbour
        links[neighbour] = ifname
    return links


def _check_links(nfs: list[_ParsedNf], raw: Any, report: IssueCollector) -> None:
    by_name = {name: _declared_neighbours(raw[index]) for index, name, _ in nfs}
    for index, name, links in nfs:
        for neighbour in by_name[name]:
            if neighbour == name:
                continue  # self link, reported by _links
            link_path = f"spec.networkFunctions[{index}].links.{neighbour}"
            if neighbour not in by_name:
                report.error(
                    link_path,
                    f"NF {name!r} links to unknown NF {neighbour!r}",
                    f"add {neighbour!r} to spec.networkFunctions or fix the name (known: {sorted(by_name)})",
                )
            elif neighbour in links and name not in by_name[neighbour]:
                report.error(
                    link_path,
                    f"asymmetric link: {name!r} links to {neighbour!r} but {neighbour!r} does not link to "
                    f"{name!r}",
                    f"add '{name}: <interface>' to the links of {neighbour!r}",
                )


def _declared_neighbours(entry: dict[str, Any]) -> list[str]:
    """Neighbours an NF entry names, valid or not: a bad interface is reported once, not as asymmetry."""
    links = entry.get("links")
    return [key for key in links if isinstance(key, str)] if isinstance(links, dict) else []
