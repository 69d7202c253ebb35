"""The names of cross-connections in the data plane: "namespace/name", bounded by the map key size.

CrossConnections are namespaced objects, so the agent names each one in the data plane by
:func:`xc_key`: two tenants may use the same name without sharing (or fighting over) one entry. The
registry's key is a fixed 256-byte NUL-terminated string (`maps.Name`, the BPF map's key size), while
a namespace (63 bytes) and a name (253) need up to 317 with the slash: longer keys become a readable
prefix plus a digest of the whole key. A light module (no libbpf): front ends and readers import it
to find an object's entry.
"""

import hashlib

from flexsfc.dataplane import maps

KEY_BYTES = maps.NAME_LEN - 1  # the terminating NUL of the fixed-size map key
DIGEST_MARK = "~"  # never in a Kubernetes name or namespace: marks a digested key
_DIGEST_HEX = 32  # 128 bits of SHA-256: no collision among the keys of one node


def xc_key(namespace: str, name: str) -> str:
    """The data-plane name of cross-connection `name` in `namespace`: "namespace/name".

    When that exceeds the registry's 255-byte key it becomes "namespace/<start of name>~<digest>",
    the digest (SHA-256, 128 bits in hex) taken over the whole "namespace/name", so the key is
    stable across agents and restarts, distinct for distinct names, and still says which namespace
    and which name it is about. Kubernetes names are ASCII, so bytes and characters agree.
    """
    if not namespace or not name or "/" in namespace or "/" in name:
        raise ValueError(f"cross-connection {namespace!r}/{name!r}: namespace and name must be set, no '/'")
    key = f"{namespace}/{name}"
    if len(key.encode()) <= KEY_BYTES:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:_DIGEST_HEX]
    room = KEY_BYTES - len(namespace.encode()) - 1 - len(DIGEST_MARK) - _DIGEST_HEX
    start = name.encode()[: max(room, 0)].decode(errors="ignore")
    return f"{namespace}/{start}{DIGEST_MARK}{digest}"


def is_legacy_key(key: str) -> bool:
    """A bare cross-connection name, as agents before namespaced keys registered them."""
    return "/" not in key
