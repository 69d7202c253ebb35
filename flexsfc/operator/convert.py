"""CrossConnection API objects <-> the model's CrossConnectionSpec (and the chain's settings).

The controller writes what :func:`xc_object` returns; the node agent reads it back with
:func:`xc_from_object`. The chain's data-plane settings travel in the CrossConnection's spec, so the
agent never needs to read chains.
"""

import dataclasses
import ipaddress
from typing import Any

from flexsfc.model.constants import API_GROUP_VERSION, KIND_CROSS_CONNECTION, LABEL_CHAIN
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, SessionTimeouts, XcSide


def settings_dict(settings: ChainSettings) -> dict[str, Any]:
    return {
        "maglevTableSize": settings.maglev_table_size,
        "sessionTimeouts": dataclasses.asdict(settings.session_timeouts),
    }


def xc_spec_dict(xc: CrossConnectionSpec, settings: ChainSettings) -> dict[str, Any]:
    return {
        "chain": xc.chain,
        "sideA": xc.side_a.to_json(),
        "sideB": xc.side_b.to_json(),
        "settings": settings_dict(settings),
    }


def xc_object(
    xc: CrossConnectionSpec, settings: ChainSettings, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The CrossConnection object for one link; `owner` is the chain's body (for ownerReferences)."""
    metadata: dict[str, Any] = {
        "name": xc.name,
        "namespace": xc.namespace,
        "labels": {LABEL_CHAIN: xc.chain},
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": KIND_CROSS_CONNECTION,
        "metadata": metadata,
        "spec": xc_spec_dict(xc, settings),
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_GROUP_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _side_from(raw: dict[str, Any]) -> XcSide:
    return XcSide(
        nf=raw["nf"],
        interface=raw["interface"],
        network=raw["network"],
        mode=Mode(raw["mode"]),
        mac=raw["mac"],
        addresses=tuple(ipaddress.ip_interface(a) for a in raw.get("addresses") or ()),
    )


def xc_from_object(obj: dict[str, Any]) -> tuple[CrossConnectionSpec, ChainSettings]:
    """Raises KeyError/ValueError on a malformed object (the agent skips and reports such ones)."""
    meta, spec = obj["metadata"], obj["spec"]
    raw_settings = spec.get("settings") or {}
    defaults = ChainSettings()
    # Timeouts missing from an object written by an older controller take their defaults.
    timeouts = raw_settings.get("sessionTimeouts") or {}
    settings = ChainSettings(
        maglev_table_size=int(raw_settings.get("maglevTableSize", defaults.maglev_table_size)),
        session_timeouts=SessionTimeouts(
            **{
                cls: int(timeouts.get(cls, default))
                for cls, default in dataclasses.asdict(defaults.session_timeouts).items()
            }
        ),
    )
    xc = CrossConnectionSpec(
        name=meta["name"],
        chain=spec["chain"],
        namespace=meta.get("namespace") or "default",
        side_a=_side_from(spec["sideA"]),
        side_b=_side_from(spec["sideB"]),
    )
    return xc, settings
