"""The local runtime's plan, kept per namespace, and what is checked before acting on it.

An apply replaces the namespaces its objects are in: the plan is split by namespace (`plan_part`)
and the parts merged back (`merge_plans`) into what the runtime runs. `check_plan` validates a
merged plan before anything changes (pod templates parse, every network selection resolves, and on
simulated nodes every network's MTU fits the underlay); what it refuses is a RuntimeRequestError.
"""

from collections.abc import Iterable

from flexsfc.local.nodes import NF_MTU, UNDERLAY_MTU
from flexsfc.local.podspec import PodSpec, parse_pod_template
from flexsfc.local.replicaset import deployment_key
from flexsfc.model.errors import ManifestError
from flexsfc.model.types import NetworkAttachment, Plan


class RuntimeRequestError(RuntimeError):
    """A request the runtime refuses (unknown NF, bad manifests) or a failure it reports."""


def plan_namespaces(plan: Plan) -> set[str]:
    return (
        {c.namespace for c in plan.chains}
        | {d.namespace for d in plan.deployments}
        | {a.namespace for a in plan.attachments}
        | {x.namespace for x in plan.cross_connections}
    )


def plan_part(plan: Plan, namespace: str) -> Plan:
    """The objects of `plan` in `namespace`."""
    return Plan(
        chains=[c for c in plan.chains if c.namespace == namespace],
        cross_connections=[x for x in plan.cross_connections if x.namespace == namespace],
        deployments=[d for d in plan.deployments if d.namespace == namespace],
        attachments=[a for a in plan.attachments if a.namespace == namespace],
    )


def merge_plans(parts: Iterable[Plan]) -> Plan:
    merged = Plan(chains=[], cross_connections=[], deployments=[], attachments=[])
    for part in parts:
        merged.chains += part.chains
        merged.cross_connections += part.cross_connections
        merged.deployments += part.deployments
        merged.attachments += part.attachments
    return merged


def manifest_error(exc: ManifestError) -> RuntimeRequestError:
    errors = [str(issue) for issue in exc.errors]
    return RuntimeRequestError(f"{len(errors)} error(s) in the manifests: " + "; ".join(errors))


def check_plan(
    plan: Plan, multinode: bool
) -> tuple[dict[str, PodSpec], dict[tuple[str, str], NetworkAttachment]]:
    """Pod templates parsed, every network selection resolved (and, on simulated nodes, every MTU
    within the underlay's); raises what is wrong."""
    specs = {
        deployment_key(d.namespace, d.name): parse_pod_template(
            d.pod_template, f"Deployment {d.namespace}/{d.name}"
        )
        for d in plan.deployments
    }
    networks = {(a.namespace, a.name): a for a in plan.attachments}
    if multinode:
        for a in plan.attachments:
            mtu = a.config.get("mtu")
            if isinstance(mtu, int) and mtu > NF_MTU:
                raise RuntimeRequestError(
                    f"NetworkAttachmentDefinition {a.namespace}/{a.name}: mtu {mtu} does not fit the "
                    f"nodes' underlay (MTU {UNDERLAY_MTU} minus {UNDERLAY_MTU - NF_MTU} bytes of VXLAN); "
                    f"set mtu to at most {NF_MTU} or leave it out"
                )
    for dep in plan.deployments:
        for sel in dep.networks:
            if (sel.namespace or dep.namespace, sel.network) not in networks:
                raise RuntimeRequestError(
                    f"Deployment {dep.namespace}/{dep.name}: network {sel.network} has no "
                    "NetworkAttachmentDefinition in the manifests; add it"
                )
    return specs, networks
