"""Attachment records as flexsfc-cni writes them, for the state-directory tests."""

from flexsfc.model.records import AttachmentRecord


def l2_record(container_id: str = "c1", ifname: str = "eth1") -> AttachmentRecord:
    """An L2 attachment of `container_id`'s `ifname` on host veth fx0123456789 (ifindex 42)."""
    return AttachmentRecord(
        container_id=container_id,
        ifname=ifname,
        netns="/run/netns/x",
        network="n",
        host_ifname="fx0123456789",
        host_ifindex=42,
        mac="02:00:00:00:00:01",
        mode="L2",
    )
