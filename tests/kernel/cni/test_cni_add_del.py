"""ADD, CHECK and DEL of L2 and L3 attachments against real network namespaces and the real `static`
IPAM plugin, through the installed executable."""

import json
import subprocess
from pathlib import Path

import pytest
from cni_harness import CniRunner, ip_json, l2_config, l3_config, link_exists

from flexsfc.cni import state
from flexsfc.model.mac import derive_mac

pytestmark = pytest.mark.root

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=sfc;K8S_POD_NAME=fw-0;K8S_POD_UID=uid-fw-0"


def _host_end(call_output: dict) -> dict:
    return next(i for i in call_output["interfaces"] if "sandbox" not in i)


def _pod_sysctl(ns: str, ifname: str, key: str) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", f"/proc/sys/net/ipv6/conf/{ifname}/{key}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def test_l2_add_check_del(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("l2")
    config = l2_config()
    container_id, add = cni.add(config, ns, cni_args=POD_ARGS)
    assert add.returncode == 0, add.output

    host = _host_end(add.output)
    pod = next(i for i in add.output["interfaces"] if "sandbox" in i)
    mac = derive_mac("firewall", "eth1")
    assert pod == {"name": "eth1", "mac": mac, "sandbox": f"/run/netns/{ns}", "mtu": 1450}
    assert add.output["ips"] == []
    assert len(host["name"]) <= 15

    (pod_link,) = ip_json("link", "show", "dev", "eth1", netns=ns)
    assert pod_link["address"] == derive_mac("firewall", "eth1")
    assert pod_link["mtu"] == 1450 and "UP" in pod_link["flags"]
    addr_info = ip_json("addr", "show", "dev", "eth1", netns=ns)[0]["addr_info"]
    assert addr_info == []  # L2: no addresses at all, not even an IPv6 link-local one
    assert _pod_sysctl(ns, "eth1", "disable_ipv6") == "1"
    (host_link,) = ip_json("link", "show", "dev", host["name"])
    assert host_link["mtu"] == 1450 and "UP" in host_link["flags"]
    sysctls = {
        key: Path(f"/proc/sys/net/{family}/conf/{host['name']}/{key}").read_text().strip()
        for family, key in (("ipv6", "disable_ipv6"), ("ipv4", "forwarding"), ("ipv4", "arp_ignore"))
    }
    assert sysctls == {"disable_ipv6": "1", "forwarding": "0", "arp_ignore": "8"}

    record = state.record_for(container_id, "eth1", state_dir=str(cni.state_dir))
    assert record is not None
    assert (record.mode, record.network, record.ips) == ("L2", "net-l2", ())
    assert (record.host_ifname, record.host_ifindex) == (host["name"], host_link["ifindex"])
    assert (record.pod_namespace, record.pod_name, record.pod_uid) == ("sfc", "fw-0", "uid-fw-0")
    assert record.netns == f"/run/netns/{ns}" and record.mac == pod_link["address"]

    check = cni.run("CHECK", {**config, "prevResult": add.output}, container_id, ns, "eth1")
    assert check.returncode == 0, check.output

    delete = cni.run("DEL", config, container_id, ns, "eth1")
    assert (delete.returncode, delete.output) == (0, None)
    assert not link_exists(host["name"]) and not link_exists("eth1", ns)
    assert state.load_records(str(cni.state_dir)) == []
    again = cni.run("DEL", config, container_id, ns, "eth1")
    assert again.returncode == 0, again.output


def test_l3_add_check_del_with_static_ipam(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("l3")
    config = l3_config()
    container_id, add = cni.add(config, ns, ifname="net0")
    assert add.returncode == 0, add.output
    assert add.output["cniVersion"] == "1.1.0"
    assert add.output["ips"] == [
        {"address": "10.240.0.2/24", "gateway": "10.240.0.1", "interface": 1},
        {"address": "fd00:240::2/64", "interface": 1},
    ]
    assert add.output["routes"] == config["ipam"]["routes"]

    addresses = ip_json("addr", "show", "dev", "net0", netns=ns)[0]["addr_info"]
    found = {(a["local"], a["prefixlen"]) for a in addresses}
    assert {("10.240.0.2", 24), ("fd00:240::2", 64)} <= found
    v6 = next(a for a in addresses if a["local"] == "fd00:240::2")
    assert not v6.get("tentative")  # no DAD: usable at once
    link_local = [a for a in addresses if a.get("scope") == "link"]
    assert all(not a.get("tentative") for a in link_local)  # shared by replicas: no DAD either
    assert _pod_sysctl(ns, "net0", "accept_dad") == "0"
    v4_routes = {(r["dst"], r.get("gateway")) for r in ip_json("route", "show", "dev", "net0", netns=ns)}
    assert ("10.9.0.0/16", "10.240.0.1") in v4_routes  # route without gw takes the address's gateway
    v6_routes = ip_json("-6", "route", "show", "dev", "net0", netns=ns)
    v6_routes = {(r["dst"], r.get("gateway")) for r in v6_routes}
    assert ("fd00:9::/64", "fd00:240::1") in v6_routes

    record = state.record_for(container_id, "net0", state_dir=str(cni.state_dir))
    assert record is not None and record.mode == "L3"
    assert record.ips == ("10.240.0.2/24", "fd00:240::2/64")

    check_config = {**config, "prevResult": add.output}
    assert cni.run("CHECK", check_config, container_id, ns, "net0").returncode == 0

    subprocess.run(["ip", "-n", ns, "addr", "del", "10.240.0.2/24", "dev", "net0"], check=True)
    broken = cni.run("CHECK", check_config, container_id, ns, "net0")
    assert (broken.returncode, broken.code) == (1, 102)
    assert "10.240.0.2/24" in broken.output["msg"]

    host = _host_end(add.output)["name"]
    assert cni.run("DEL", config, container_id, ns, "net0").returncode == 0
    assert not link_exists(host) and not link_exists("net0", ns)
    assert cni.run("DEL", config, container_id, ns, "net0").returncode == 0


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_result_follows_requested_version(cni: CniRunner, netns_factory, version: str) -> None:
    ns = netns_factory("ver")
    config = l3_config(cniVersion=version)
    container_id, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    assert add.output["cniVersion"] == version
    v4 = add.output["ips"][0]
    pod = add.output["interfaces"][1]
    if version == "1.0.0":
        assert "version" not in v4 and "mtu" not in pod
    else:
        assert v4["version"] == "4" and add.output["ips"][1]["version"] == "6"
    assert v4["interface"] == 1 and pod["sandbox"] == f"/run/netns/{ns}"
    if version != "0.3.1":
        check = cni.run("CHECK", {**config, "prevResult": add.output}, container_id, ns, "eth1")
        assert check.returncode == 0, check.output
    assert cni.run("DEL", config, container_id, ns, "eth1").returncode == 0


def test_replicas_share_ip_and_mac(cni: CniRunner, netns_factory) -> None:
    config = l3_config()
    results = [cni.add(config, netns_factory(f"rep{i}"))[1] for i in range(2)]
    assert all(r.returncode == 0 for r in results), [r.output for r in results]
    pods = [r.output["interfaces"][1] for r in results]
    hosts = [r.output["interfaces"][0]["name"] for r in results]
    assert pods[0]["mac"] == pods[1]["mac"] == derive_mac("gateway", "eth1")
    assert results[0].output["ips"] == results[1].output["ips"]
    assert hosts[0] != hosts[1]
    records = state.load_records(str(cni.state_dir))
    assert len({r.mac for r in records}) == 1 and len({r.ips for r in records}) == 1


def test_del_after_netns_is_gone(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("gone")
    config = l3_config()
    container_id, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    subprocess.run(["ip", "netns", "del", ns], check=True)
    host = _host_end(add.output)["name"]
    for _ in range(2):
        delete = cni.run("DEL", config, container_id, ns, "eth1")
        assert delete.returncode == 0, delete.output
    # Runtimes may also send DEL with no CNI_NETNS at all.
    assert cni.run("DEL", config, container_id, "", "eth1").returncode == 0
    assert not link_exists(host)
    assert state.load_records(str(cni.state_dir)) == []


def test_chained_prev_result_passes_through(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("chain")
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": f"/run/netns/{ns}"}],
        "ips": [{"address": "192.0.2.10/24", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
        "dns": {"nameservers": ["192.0.2.53"]},
    }
    config = l3_config(cniVersion="1.0.0", prevResult=prev)
    _, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    out = add.output
    assert out["interfaces"][0] == prev["interfaces"][0]
    assert [i["name"] for i in out["interfaces"]][2] == "eth1"
    assert out["ips"][0] == prev["ips"][0]
    assert {ip["interface"] for ip in out["ips"][1:]} == {2}
    assert out["routes"][0] == prev["routes"][0] and len(out["routes"]) == 3
    assert out["dns"] == prev["dns"]


def test_failing_add_leaves_nothing_behind(cni: CniRunner, netns_factory) -> None:
    """The kernel refuses the route (gateway off-link) after the veth exists: everything is undone."""
    ns = netns_factory("fail")
    config = l3_config()
    config["ipam"]["routes"] = [{"dst": "10.9.0.0/16", "gw": "198.51.100.1"}]
    container_id, add = cni.add(config, ns)
    assert (add.returncode, add.code) == (1, 100), add.output
    assert "10.9.0.0/16" in add.output["msg"] + add.output.get("details", "")
    assert not link_exists("eth1", ns)
    assert ip_json("link", "show", netns=ns) and all(
        link["ifname"] == "lo" for link in ip_json("link", "show", netns=ns)
    )
    from flexsfc.cni.commands import host_name

    assert not link_exists(host_name(container_id, "eth1"))
    assert state.load_records(str(cni.state_dir)) == []


def test_record_files_are_json_named_by_container_and_ifname(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("rec")
    container_id, add = cni.add(l2_config(), ns)
    assert add.returncode == 0, add.output
    path = cni.state_dir / f"{container_id}@eth1.json"
    raw = json.loads(path.read_text())
    assert raw["containerId"] == container_id and raw["hostIfname"] == add.output["interfaces"][0]["name"]
    assert not [p for p in cni.state_dir.iterdir() if p.name.endswith(".tmp")]


def test_del_without_record_still_removes_the_veth(cni: CniRunner, netns_factory) -> None:
    """An ADD killed between creating the veth and writing its record must not leak the pair."""
    ns = netns_factory("norec")
    config = l2_config()
    container_id, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    (cni.state_dir / f"{container_id}@eth1.json").unlink()
    assert cni.run("DEL", config, container_id, ns, "eth1").returncode == 0
    assert not link_exists(add.output["interfaces"][0]["name"]) and not link_exists("eth1", ns)


def test_del_needs_no_mac_generation_string(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("delmin")
    config = l2_config()
    container_id, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    minimal = {k: v for k, v in config.items() if k != "macGenerationString"}
    assert cni.run("DEL", minimal, container_id, ns, "eth1").returncode == 0
    assert not link_exists("eth1", ns)


def test_taken_host_name_gets_more_entropy(cni: CniRunner, netns_factory) -> None:
    from flexsfc.cni.commands import host_name

    ns = netns_factory("taken")
    container_id = cni.new_container_id()
    squatter = host_name(container_id, "eth1")
    squat = ["ip", "link", "add", squatter, "type", "veth", "peer", "name", f"{squatter}p"]
    subprocess.run(squat, check=True)
    try:
        _, add = cni.add(l2_config(), ns, container_id=container_id)
        assert add.returncode == 0, add.output
        taken_over = add.output["interfaces"][0]["name"]
        assert taken_over.startswith(squatter) and len(taken_over) == 15
        assert link_exists(squatter)  # someone else's link is never touched
    finally:
        subprocess.run(["ip", "link", "del", squatter], capture_output=True, check=False)


def test_check_names_what_differs(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("chk")
    config = l2_config()
    container_id, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    check_config = {**config, "prevResult": add.output}

    subprocess.run(["ip", "-n", ns, "link", "set", "eth1", "address", "02:aa:bb:cc:dd:ee"], check=True)
    wrong_mac = cni.run("CHECK", check_config, container_id, ns, "eth1")
    assert (wrong_mac.returncode, wrong_mac.code) == (1, 102)
    assert "02:aa:bb:cc:dd:ee" in wrong_mac.output["msg"]

    mac = derive_mac("firewall", "eth1")
    subprocess.run(["ip", "-n", ns, "link", "set", "eth1", "address", mac], check=True)
    subprocess.run(["ip", "link", "set", add.output["interfaces"][0]["name"], "down"], check=True)
    host_down = cni.run("CHECK", check_config, container_id, ns, "eth1")
    assert (host_down.returncode, host_down.code) == (1, 102)
    assert "down" in host_down.output["msg"]
