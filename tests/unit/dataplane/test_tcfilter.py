"""The filter request we pack by hand decodes, with pyroute2, to the filter we mean (no kernel here;
tests/kernel/dataplane attaches it for real and reads the tag back)."""

import struct

import pytest
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from flexsfc.dataplane import tcfilter


def _decode(body: bytes) -> tcmsg:
    msg = tcmsg(struct.pack("=IHHII", 16 + len(body), 0, 0, 0, 0) + body)
    msg.decode()
    return msg


def test_packed_request_decodes_to_our_filter() -> None:
    for name in ("xconnect:[7]", "xconnect:[123456]", "x:[1]"):
        msg = _decode(tcfilter._filter_request(41, 9, 0xF5C0, 0x5C, 0x8005, name))
        assert (msg["index"], msg["handle"], msg["parent"]) == (41, 0xF5C0, tcfilter.TC_H_INGRESS_PARENT)
        assert msg["info"] >> 16 == 0x5C
        assert msg.get_attr("TCA_KIND") == "bpf"
        options = msg.get_attr("TCA_OPTIONS")
        assert options.get_attr("TCA_BPF_FD") == 9
        assert options.get_attr("TCA_BPF_NAME") == name
        assert options.get_attr("TCA_BPF_FLAGS") == tcfilter.TCA_BPF_FLAG_ACT_DIRECT
        assert options.get_attr("TCA_BPF_CLASSID") == 0x8005


def test_a_tag_outside_16_bits_is_refused_before_anything_is_sent() -> None:
    for tag in (0, 1 << 16):
        with pytest.raises(ValueError, match="tag"):
            tcfilter.attach_ingress(1, -1, handle=1, priority=1, tag=tag, name="x")
