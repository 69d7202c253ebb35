"""The MAC address every replica of an NF interface shares.

The CNI plugin and the planner both call :func:`derive_mac`, so what the control plane programs
(neighbour answers) is exactly what the pods carry.
"""

import hashlib


def derive_mac(generation_string: str, ifname: str) -> str:
    """Stable, locally administered, unicast MAC for (macGenerationString, pod interface name).

    The interface name is part of the input so two interfaces of one NF never share a MAC even when
    their NetworkAttachmentDefinitions reuse one generation string.
    """
    digest = hashlib.sha256(f"flexsfc:{generation_string}:{ifname}".encode()).digest()
    first = (digest[0] & 0xFC) | 0x02  # clear multicast bit, set locally administered bit
    octets = bytes([first]) + digest[1:6]
    return ":".join(f"{b:02x}" for b in octets)
