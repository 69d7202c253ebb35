"""Builders of Ethernet frames for program tests, fuzzing and micro-benchmarks (BPF_PROG_TEST_RUN).

Only what the cross-connection parses is filled in carefully (addresses, protocols, ports,
fragment fields, ARP/ND bodies); checksums of forwarded packets are left zero since the program
never looks at them.
"""

import ipaddress
import struct

from flexsfc.dataplane.codecs import mac_bytes

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58

DEFAULT_SRC_MAC = "02:00:00:00:00:01"
DEFAULT_DST_MAC = "02:00:00:00:00:02"


def ethernet(
    ethertype: int, payload: bytes, *, src: str = DEFAULT_SRC_MAC, dst: str = DEFAULT_DST_MAC
) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def l4(proto: int, sport: int, dport: int, payload: bytes = b"x" * 18) -> bytes:
    if proto == TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + payload
    if proto == UDP:
        return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if proto == SCTP:
        return struct.pack("!HHII", sport, dport, 0, 0) + payload
    if proto in (ICMP, ICMPV6):
        return struct.pack("!BBHHH", 8 if proto == ICMP else 128, 0, 0, 1, 1) + payload
    return payload


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1, mf: bool = False, frag_offset: int = 0
) -> bytes:
    flags = (0x2000 if mf else 0) | (frag_offset // 8)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), ident, flags, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + payload


def ipv6(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    frag_id: int | None = None,
    mf: bool = False,
    frag_offset: int = 0,
    hop_limit: int = 64,
) -> bytes:
    next_header = proto
    if frag_id is not None:
        payload = struct.pack("!BBHI", proto, 0, (frag_offset // 8) << 3 | int(mf), frag_id) + payload
        next_header = 44
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip
    return header + payload


def flow_frame(
    src: str, dst: str, proto: int, sport: int = 0, dport: int = 0, payload: bytes = b"x" * 18
) -> bytes:
    """A complete frame of one flow (IPv4 or IPv6 chosen by the addresses)."""
    body = l4(proto, sport, dport, payload)
    if ipaddress.ip_address(src).version == 4:
        return ethernet(ETH_P_IP, ipv4(src, dst, proto, body))
    return ethernet(ETH_P_IPV6, ipv6(src, dst, proto, body))


def arp(op: int, sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op,
        mac_bytes(sender_mac), ipaddress.IPv4Address(sender_ip).packed,
        mac_bytes(target_mac), ipaddress.IPv4Address(target_ip).packed,
    )  # fmt: skip
    dst = "ff:ff:ff:ff:ff:ff" if op == 1 else target_mac
    return ethernet(ETH_P_ARP, body + b"\0" * 18, src=sender_mac, dst=dst)


def solicited_node(target: str) -> str:
    low = ipaddress.IPv6Address(target).packed[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low))


def neighbour_solicitation(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    body = struct.pack("!BBHI16s", 135, 0, 0, 0, ipaddress.IPv6Address(target_ip).packed)
    body += struct.pack("!BB6s", 1, 1, mac_bytes(sender_mac))
    dst_ip = solicited_node(target_ip)
    dst_mac = "33:33:" + ":".join(f"{b:02x}" for b in ipaddress.IPv6Address(dst_ip).packed[-4:])
    return ethernet(
        ETH_P_IPV6, ipv6(sender_ip, dst_ip, ICMPV6, body, hop_limit=255), src=sender_mac, dst=dst_mac
    )


def neighbour_advertisement(sender_mac: str, sender_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    body = struct.pack("!BBHI16s", 136, 0, 0, 0x60000000, ipaddress.IPv6Address(sender_ip).packed)
    body += struct.pack("!BB6s", 2, 1, mac_bytes(sender_mac))
    return ethernet(
        ETH_P_IPV6, ipv6(sender_ip, dst_ip, ICMPV6, body, hop_limit=255), src=sender_mac, dst=dst_mac
    )


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum_ok(ip6_packet: bytes) -> bool:
    """Whether an IPv6 packet without extension headers carries a valid ICMPv6 checksum."""
    length = struct.unpack("!H", ip6_packet[4:6])[0]
    body = ip6_packet[40 : 40 + length]
    pseudo = ip6_packet[8:40] + struct.pack("!IxxxB", length, ICMPV6)
    return internet_checksum(pseudo + body) == 0xFFFF
