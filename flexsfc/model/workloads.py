"""NF Deployments and NetworkAttachmentDefinitions: parsing into the typed model.

A Deployment is an NF Deployment when its pod template carries the flexsfc.io/network-function
label; its pods' data-plane interfaces come from the Multus networks annotation (text form
`[namespace/]name[@ifname]`, comma separated, or the JSON list form). A NetworkAttachmentDefinition
is a flexsfc one when its CNI config (or one plugin of a config list) has type flexsfc-cni; others
are kept as :class:`ForeignNetwork` so a chain interface pointing at one gets a precise error.
"""

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from flexsfc.model.chain import DEFAULT_NAMESPACE, mapping_field, object_label
from flexsfc.model.constants import ANNOTATION_NETWORKS, CNI_TYPE, KIND_NAD, LABEL_NF
from flexsfc.model.errors import Issue, IssueCollector
from flexsfc.model.names import dns_label_problem, ifname_problem
from flexsfc.model.types import Mode, NetworkAttachment, NetworkSelection, NfDeployment

MIN_MTU, MAX_MTU = 68, 65535
DEFAULT_MTU = 1500
# Fields only the node may set (flexsfc.cni.config.NODE_LEVEL_FIELDS, which the plugin enforces): a
# NetworkAttachmentDefinition is written by tenants, the plugin runs as root on the node.
NODE_LEVEL_CNI_FIELDS = ("stateDir", "pinDir", "kubeconfig", "socket", "deleteQueue")
# The CNI specification's rule for a network name, which flexsfc-cni (and libcni) enforce.
_CNI_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class ForeignNetwork:
    """A NetworkAttachmentDefinition for another CNI plugin (e.g. a management network)."""

    name: str
    namespace: str
    cni_type: str | None  # None when the NAD has no inline spec.config


def parse_networks_annotation(value: Any, path: str, report: IssueCollector) -> list[NetworkSelection]:
    """Entries of a k8s.v1.cni.cncf.io/networks annotation, in both of Multus' forms.

    Text entries without '@ifname' get Multus' default names net1, net2, ... by position.
    """
    if not isinstance(value, str):
        report.error(path, "must be a string", "write 'nad-name@eth1, other@eth2' or a JSON list as a string")
        return []
    if value.strip().startswith("["):
        return _json_networks(value, path, report)
    selections: list[NetworkSelection] = []
    for index, entry in enumerate(part.strip() for part in value.split(",")):
        if not entry:
            report.error(path, f"entry {index} is empty", "remove the stray ',' from the annotation")
            continue
        ref, _, ifname = entry.partition("@")
        namespace, _, name = ref.rpartition("/")
        if not name:
            report.error(path, f"entry {entry!r} names no network", "write [namespace/]name[@ifname]")
            continue
        selections.append(NetworkSelection(name, ifname if ifname else f"net{index + 1}", namespace or None))
    return _check_interfaces(selections, path, report)


def _json_networks(value: str, path: str, report: IssueCollector) -> list[NetworkSelection]:
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as exc:
        report.error(
            path, f"invalid JSON: {exc}", 'write a JSON list like [{"name": "n", "interface": "eth1"}]'
        )
        return []
    if not isinstance(raw, list):
        report.error(path, "the JSON form must be a list", "wrap the network objects in [ ]")
        return []
    selections: list[NetworkSelection] = []
    for index, entry in enumerate(raw):
        entry_path = f"{path}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            report.error(
                entry_path, 'needs a "name" (the NetworkAttachmentDefinition)', 'add "name": "<nad>"'
            )
            continue
        interface = entry.get("interface")
        if not isinstance(interface, str) or not interface:
            report.error(
                f"{entry_path}.interface",
                f"network {entry['name']!r} has no interface name",
                'add "interface": "eth1": flexsfc links refer to interfaces by name',
            )
            continue
        namespace = entry.get("namespace")
        selections.append(NetworkSelection(entry["name"], interface, namespace if namespace else None))
    return _check_interfaces(selections, path, report)


def _check_interfaces(
    selections: list[NetworkSelection], path: str, report: IssueCollector
) -> list[NetworkSelection]:
    seen: set[str] = set()
    valid: list[NetworkSelection] = []
    for selection in selections:
        problem = ifname_problem(selection.interface)
        if problem:
            report.error(
                path,
                f"interface name {selection.interface!r} of network {selection.network!r} {problem}",
                "use a Linux interface name of 1-15 characters without '/', ':' or spaces",
            )
        elif selection.interface in seen:
            report.error(
                path,
                f"interface {selection.interface!r} is attached twice",
                "give every network of the pod its own interface name",
            )
        else:
            seen.add(selection.interface)
            valid.append(selection)
    return valid


def parse_deployment(obj: dict[str, Any], source: str = "") -> tuple[NfDeployment | None, list[Issue]]:
    """The NfDeployment of an apps/v1 Deployment, or None if it is not an NF (no label) or is invalid."""
    report = IssueCollector(object_label("Deployment", obj), source)
    metadata = mapping_field(obj, "metadata")
    spec = mapping_field(obj, "spec")
    raw_template = spec.get("template")
    template: dict[str, Any] | None = raw_template if isinstance(raw_template, dict) else None
    template_meta = mapping_field(template or {}, "metadata")
    labels = mapping_field(template_meta, "labels")
    if LABEL_NF not in labels:
        return None, []
    nf = labels[LABEL_NF]
    nf_path = f"spec.template.metadata.labels.{LABEL_NF}"
    problem = dns_label_problem(nf) if isinstance(nf, str) else "must be a string"
    if problem:
        report.error(nf_path, f"NF name {nf!r} {problem}", "use the NF's name from the ServiceFunctionChain")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        report.error("metadata.name", "missing required field", "give the Deployment a name")
        name = ""  # never used: the error returns before the NfDeployment is built
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    if not isinstance(template_meta.get("annotations", {}), dict):
        report.error("spec.template.metadata.annotations", "must be a mapping", "write key: value pairs")
    if not isinstance((template or {}).get("spec"), dict):
        report.error("spec.template.spec", "missing required field", "describe the NF's containers")
    _check_selector(spec.get("selector"), labels, report)
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        report.error(
            "spec.replicas", f"{replicas!r} is not a replica count", "use an integer >= 0 (default 1)"
        )
    annotations = mapping_field(template_meta, "annotations")
    networks: list[NetworkSelection] = []
    if ANNOTATION_NETWORKS in annotations:
        path = f"spec.template.metadata.annotations.{ANNOTATION_NETWORKS}"
        networks = parse_networks_annotation(annotations[ANNOTATION_NETWORKS], path, report)
    if report.has_errors:
        return None, report.issues
    deployment = NfDeployment(
        name=name,
        namespace=namespace,
        nf=nf,
        replicas=replicas,
        networks=tuple(networks),
        pod_template=template or {},
    )
    return deployment, report.issues


def _check_selector(selector: Any, labels: dict[str, Any], report: IssueCollector) -> None:
    if not isinstance(selector, dict) or not isinstance(selector.get("matchLabels"), dict):
        report.error(
            "spec.selector.matchLabels",
            "missing required field",
            f"add spec.selector.matchLabels: {{{LABEL_NF}: <nf>}}",
        )
        return
    for key, value in selector["matchLabels"].items():
        if labels.get(key) != value:
            report.error(
                f"spec.selector.matchLabels.{key}",
                f"{key}={value!r} does not match the pod template's labels",
                "make spec.selector.matchLabels a subset of spec.template.metadata.labels",
            )


def parse_nad(
    obj: dict[str, Any], source: str = ""
) -> tuple[NetworkAttachment | ForeignNetwork | None, list[Issue]]:
    """A NetworkAttachmentDefinition: flexsfc (typed), foreign (other plugin), or None when invalid."""
    report = IssueCollector(object_label(KIND_NAD, obj), source)
    metadata = mapping_field(obj, "metadata")
    name = metadata.get("name")
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    if not isinstance(name, str) or not name:
        report.error("metadata.name", "missing required field", "name the NetworkAttachmentDefinition")
        return None, report.issues
    spec = mapping_field(obj, "spec")
    raw_config = spec.get("config")
    if raw_config is None:
        return ForeignNetwork(name, namespace, None), []  # Multus reads such a config from the node
    config = _json_config(raw_config, report)
    if config is None:
        return None, report.issues
    plugin, path = _flexsfc_plugin(config)
    if plugin is None:
        raw_plugins = config.get("plugins")
        plugins = raw_plugins if isinstance(raw_plugins, list) else []
        cni_type = config.get("type") or next((p.get("type") for p in plugins if isinstance(p, dict)), None)
        return ForeignNetwork(name, namespace, str(cni_type) if cni_type else None), []
    attachment = _attachment(name, namespace, plugin, path, report)
    return (None if report.has_errors else attachment), report.issues


def _json_config(raw: Any, report: IssueCollector) -> dict[str, Any] | None:
    if isinstance(raw, dict):  # tolerate an inline mapping instead of a JSON string
        return raw
    if not isinstance(raw, str):
        report.error("spec.config", "must be a JSON string", "write the CNI configuration as a JSON string")
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        report.error("spec.config", f"invalid JSON: {exc}", "fix the CNI configuration's JSON syntax")
        return None
    if not isinstance(config, dict):
        report.error("spec.config", "must be a JSON object", "write the CNI configuration as {...}")
        return None
    return config


def _flexsfc_plugin(config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    if config.get("type") == CNI_TYPE:
        return config, "spec.config"
    plugins = config.get("plugins")
    if isinstance(plugins, list):
        for index, plugin in enumerate(plugins):
            if isinstance(plugin, dict) and plugin.get("type") == CNI_TYPE:
                # As libcni does when it runs a list: each plugin gets the list's name and version.
                inherited = {key: config[key] for key in ("cniVersion", "name") if key in config}
                return {**inherited, **plugin}, f"spec.config.plugins[{index}]"
    return None, ""


def _attachment(
    name: str, namespace: str, plugin: dict[str, Any], path: str, report: IssueCollector
) -> NetworkAttachment:
    cni_name = plugin.get("name")
    if cni_name is not None and not (isinstance(cni_name, str) and _CNI_NETWORK_NAME.fullmatch(cni_name)):
        report.error(
            f"{path}.name",
            f"{cni_name!r} is not a CNI network name",
            "start with a letter or digit, then only letters, digits, '_', '.', '-' (e.g. the NAD's name)",
        )
    for key in NODE_LEVEL_CNI_FIELDS:
        if key in plugin:
            report.error(
                f"{path}.{key}",
                "is node-level: a NetworkAttachmentDefinition may not set it (flexsfc-cni refuses it)",
                f"remove {key!r}; the node sets it in /etc/flexsfc/cni.conf (docs/cni.md)",
            )
    mac_string = plugin.get("macGenerationString")
    if not isinstance(mac_string, str) or not mac_string:
        report.error(
            f"{path}.macGenerationString",
            "missing required field (a non-empty string)",
            'add "macGenerationString": "<nf>-<ifname>"; every replica\'s MAC is derived from it',
        )
    mtu = plugin.get("mtu", DEFAULT_MTU)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        report.error(f"{path}.mtu", f"{mtu!r} is not a valid MTU", f"use an integer {MIN_MTU}..{MAX_MTU}")
        mtu = DEFAULT_MTU
    ipam = plugin.get("ipam")
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    if ipam is not None and ipam != {}:
        addresses = _static_ipam(ipam, f"{path}.ipam", report)
    return NetworkAttachment(
        name=name,
        namespace=namespace,
        config=plugin,
        mac_generation_string=mac_string if isinstance(mac_string, str) else "",
        mode=Mode.L3 if ipam else Mode.L2,
        addresses=tuple(addresses),
        mtu=mtu,
    )


def _static_ipam(ipam: Any, path: str, report: IssueCollector) -> list[Any]:
    if not isinstance(ipam, dict) or ipam.get("type") != "static":
        got = ipam.get("type") if isinstance(ipam, dict) else ipam
        report.error(
            f"{path}.type",
            f"is {got!r}; flexsfc supports only the 'static' IPAM plugin",
            'use "ipam": {"type": "static", "addresses": [...]} (all replicas share the address), '
            "or drop ipam for an L2 interface",
        )
        return []
    raw_addresses = ipam.get("addresses")
    if not isinstance(raw_addresses, list) or not raw_addresses:
        report.error(
            f"{path}.addresses",
            "missing or empty: an L3 interface needs at least one address",
            'add "addresses": [{"address": "10.10.0.1/24"}], or drop ipam for an L2 interface',
        )
        return []
    addresses = []
    for index, entry in enumerate(raw_addresses):
        value = entry.get("address") if isinstance(entry, dict) else None
        try:
            if not isinstance(value, str) or "/" not in value:
                raise ValueError("no prefix length")
            addresses.append(ipaddress.ip_interface(value))
        except ValueError:
            report.error(
                f"{path}.addresses[{index}].address",
                f"{value!r} is not an address in CIDR form",
                "write an IPv4 or IPv6 address with prefix length, e.g. 10.10.0.1/24 or fd00::1/64",
            )
    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        report.error(f"{path}.routes", "must be a list", 'write "routes": [{"dst": ..., "gw": ...}]')
        routes = []
    for index, route in enumerate(routes):
        _check_route(route, f"{path}.routes[{index}]", report)
    return addresses


def _check_route(route: Any, path: str, report: IssueCollector) -> None:
    try:
        if not isinstance(route, dict) or not isinstance(route.get("dst"), str):
            raise ValueError("no dst")
        ipaddress.ip_network(route["dst"], strict=False)
        if "gw" in route:
            if not isinstance(route["gw"], str):
                raise ValueError("gw must be a string")
            ipaddress.ip_address(route["gw"])
    except ValueError:
        report.error(
            path, f"{route!r} is not a valid route", 'write {"dst": "10.20.0.0/24", "gw": "10.10.0.2"}'
        )
