"""Values the maps hold, to and from their Python forms: names (NUL-padded), MAC and IP addresses.

The maps' layouts are flexsfc.dataplane.maps (the contract's mirror); these are what the data plane's
modules do with the bytes in them.
"""

import ctypes
import ipaddress

from flexsfc.dataplane.maps import FAMILY_V6, NAME_LEN, Name


def encode_name(name: str, field: str) -> "ctypes.Array[ctypes.c_char]":
    raw = name.encode()
    if not raw or len(raw) >= NAME_LEN:
        raise ValueError(f"{field} {name!r}: must be 1..{NAME_LEN - 1} bytes")
    out = Name()
    out.value = raw
    return out


def mac_bytes(mac: str, field: str = "mac") -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6:
        raise ValueError(f"{field} {mac!r}: expected six hex octets like 02:00:00:00:00:01")
    return raw


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def addr_bytes(family: int, raw: bytes) -> str:
    if family == FAMILY_V6:
        return str(ipaddress.IPv6Address(bytes(raw)))
    return str(ipaddress.IPv4Address(bytes(raw[:4])))
