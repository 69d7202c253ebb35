"""Planning: a chain plus the NF Deployments and NetworkAttachmentDefinitions it can see ->
cross-connections.

One cross-connection per link; side A is the NF listed earlier in spec.networkFunctions. A side is
resolved through the NF's Deployment (label flexsfc.io/network-function in the chain's namespace),
the entry of its Multus annotation with the link's interface name, and the NetworkAttachmentDefinition
that entry names: mode L2/L3, addresses and the MAC all replicas share.

On a cluster, objects arrive in any order: :func:`plan_chain` never fails, it returns what it could
resolve and an :class:`UnresolvedSide` per side it could not, with the reason.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from flexsfc.model.constants import ANNOTATION_NETWORKS, CNI_TYPE, LABEL_NF
from flexsfc.model.mac import derive_mac
from flexsfc.model.names import cross_connection_name
from flexsfc.model.types import (
    ChainSpec,
    CrossConnectionSpec,
    NetworkAttachment,
    NfDeployment,
    XcSide,
)
from flexsfc.model.workloads import ForeignNetwork


@dataclass(frozen=True)
class LinkEnd:
    nf: str
    interface: str


@dataclass(frozen=True)
class ChainLink:
    """A link of a chain, before any attachment details: what a CrossConnection object records."""

    name: str  # the CrossConnection name
    chain: str
    namespace: str
    side_a: LinkEnd
    side_b: LinkEnd


class UnresolvedReason(StrEnum):
    NO_DEPLOYMENT = "NoDeployment"  # no Deployment carries the NF label (yet)
    AMBIGUOUS_DEPLOYMENT = "AmbiguousDeployment"  # several Deployments carry the NF label
    NO_NETWORK = "NoNetworkForInterface"  # the Deployment attaches no network as this interface
    NO_ATTACHMENT = "NoAttachmentDefinition"  # the named NetworkAttachmentDefinition is missing
    WRONG_PLUGIN = "WrongPlugin"  # the NetworkAttachmentDefinition uses another CNI plugin


@dataclass(frozen=True)
class UnresolvedSide:
    cross_connection: str
    nf: str
    interface: str
    reason: UnresolvedReason
    message: str
    fix: str
    network: str = ""  # "namespace/name" of the NetworkAttachmentDefinition, when known


@dataclass
class ChainPlan:
    chain: ChainSpec
    links: list[ChainLink]
    cross_connections: list[CrossConnectionSpec] = field(default_factory=list)  # fully resolved ones
    unresolved: list[UnresolvedSide] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unresolved


def chain_links(chain: ChainSpec) -> list[ChainLink]:
    """Every link of the chain once, side A being the NF listed first, in spec order."""
    order = {nf.name: index for index, nf in enumerate(chain.network_functions)}
    links: list[ChainLink] = []
    for nf in chain.network_functions:
        for neighbour, interface in nf.links.items():
            other = chain.nf(neighbour)
            if other is None or order[neighbour] < order[nf.name] or nf.name not in other.links:
                continue  # seen from the earlier NF already (validation rejects unknown/asymmetric)
            links.append(
                ChainLink(
                    name=cross_connection_name(chain.name, nf.name, neighbour),
                    chain=chain.name,
                    namespace=chain.namespace,
                    side_a=LinkEnd(nf.name, interface),
                    side_b=LinkEnd(neighbour, other.links[nf.name]),
                )
            )
    return links


def plan_chain(
    chain: ChainSpec,
    deployments: Iterable[NfDeployment],
    networks: Iterable[NetworkAttachment | ForeignNetwork],
) -> ChainPlan:
    """Cross-connections of `chain` resolved against the Deployments and NADs given (any namespaces)."""
    resolver = _Resolver(chain.namespace, list(deployments), list(networks))
    result = ChainPlan(chain=chain, links=chain_links(chain))
    for link in result.links:
        side_a = resolver.side(link.name, link.side_a, result.unresolved)
        side_b = resolver.side(link.name, link.side_b, result.unresolved)
        if side_a is not None and side_b is not None:
            result.cross_connections.append(
                CrossConnectionSpec(link.name, chain.name, chain.namespace, side_a, side_b)
            )
    return result


class _Resolver:
    def __init__(
        self,
        namespace: str,
        deployments: list[NfDeployment],
        networks: list[NetworkAttachment | ForeignNetwork],
    ) -> None:
        self.namespace = namespace
        self.deployments = [d for d in deployments if d.namespace == namespace]
        self.networks = {(n.namespace, n.name): n for n in networks}

    def side(self, xc: str, end: LinkEnd, unresolved: list[UnresolvedSide]) -> XcSide | None:
        def fail(reason: UnresolvedReason, message: str, fix: str, network: str = "") -> None:
            unresolved.append(UnresolvedSide(xc, end.nf, end.interface, reason, message, fix, network))

        owners = [d for d in self.deployments if d.nf == end.nf]
        if not owners:
            fail(
                UnresolvedReason.NO_DEPLOYMENT,
                f"no Deployment in namespace {self.namespace!r} has pod label {LABEL_NF}={end.nf}",
                "create the NF's Deployment with that label on spec.template.metadata.labels",
            )
            return None
        if len(owners) > 1:
            fail(
                UnresolvedReason.AMBIGUOUS_DEPLOYMENT,
                f"Deployments {sorted(d.name for d in owners)} all carry {LABEL_NF}={end.nf}",
                "label exactly one Deployment per NF",
            )
            return None
        deployment = owners[0]
        selection = next((s for s in deployment.networks if s.interface == end.interface), None)
        if selection is None:
            fail(
                UnresolvedReason.NO_NETWORK,
                f"NF {end.nf!r} interface {end.interface!r} has no NetworkAttachmentDefinition: Deployment "
                f"{deployment.name!r} attaches none as {end.interface!r}",
                f"add '<nad-name>@{end.interface}' to the pod template annotation {ANNOTATION_NETWORKS}",
            )
            return None
        nad_namespace = selection.namespace or deployment.namespace
        network = self.networks.get((nad_namespace, selection.network))
        if network is None:
            fail(
                UnresolvedReason.NO_ATTACHMENT,
                f"NF {end.nf!r} interface {end.interface!r} uses NetworkAttachmentDefinition "
                f"{nad_namespace}/{selection.network}, which does not exist",
                f"create it (type {CNI_TYPE}) or fix the name in Deployment {deployment.name!r}'s "
                f"{ANNOTATION_NETWORKS} annotation",
                f"{nad_namespace}/{selection.network}",
            )
            return None
        if isinstance(network, ForeignNetwork):
            fail(
                UnresolvedReason.WRONG_PLUGIN,
                f"NetworkAttachmentDefinition {nad_namespace}/{selection.network} for NF {end.nf!r} "
                f"interface {end.interface!r} uses CNI plugin {network.cni_type!r}",
                f'set "type": "{CNI_TYPE}" in its spec.config: chain interfaces need the flexsfc plugin',
            )
            return None
        return XcSide(
            nf=end.nf,
            interface=end.interface,
            network=network.name,
            mode=network.mode,
            mac=derive_mac(network.mac_generation_string, end.interface),
            addresses=network.addresses,
        )
