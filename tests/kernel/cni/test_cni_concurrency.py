"""Concurrent ADDs, as a node starting many pods at once: distinct host ends, one record each."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from cni_harness import CniRunner, l3_config, link_exists

from flexsfc.cni import state

pytestmark = pytest.mark.root


def test_eight_concurrent_adds(cni: CniRunner, netns_factory) -> None:
    config = l3_config()
    namespaces = [netns_factory(f"cc{i}") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda ns: cni.add(config, ns), namespaces))
    assert all(call.returncode == 0 for _, call in results), [call.output for _, call in results]

    host_names = [call.output["interfaces"][0]["name"] for _, call in results]
    assert len(set(host_names)) == 8 and all(len(n) <= 15 for n in host_names)
    assert all(link_exists(n) for n in host_names)

    records = state.load_records(str(cni.state_dir))
    assert sorted(r.container_id for r in records) == sorted(cid for cid, _ in results)
    assert sorted(r.host_ifname for r in records) == sorted(host_names)
    assert len({r.host_ifindex for r in records}) == 8

    with ThreadPoolExecutor(max_workers=8) as pool:
        deletes = list(
            pool.map(
                lambda item: cni.run("DEL", config, item[0], item[1], "eth1"),
                zip([cid for cid, _ in results], namespaces, strict=True),
            )
        )
    assert all(d.returncode == 0 for d in deletes)
    assert state.load_records(str(cni.state_dir)) == []
    assert not any(link_exists(n) for n in host_names)
