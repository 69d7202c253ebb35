"""CrossConnection names (unique, valid, stable) and interface name rules."""

import itertools
import re

import pytest

from flexsfc.model.names import cross_connection_name, dns_label_problem, ifname_problem

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_plain_name_when_unambiguous() -> None:
    assert (
        cross_connection_name("transparent-firewall", "nat", "firewall")
        == "transparent-firewall-nat-firewall"
    )


def test_hyphenated_nf_names_do_not_collide() -> None:
    left = cross_connection_name("x", "a-b", "c")
    right = cross_connection_name("x", "a", "b-c")
    chain_side = cross_connection_name("x-a", "b", "c")
    assert len({left, right, chain_side}) == 3
    assert chain_side == "x-a-b-c"  # NF names without '-' keep the readable form


def test_names_are_unique_valid_and_stable_over_tricky_tuples() -> None:
    parts = ["a", "b", "a-b", "b-c", "c", "ab", "a-b-c", "x" * 40, "x" * 41]
    tuples = [t for t in itertools.product(parts, repeat=3) if t[1] != t[2]]
    names = [cross_connection_name(*t) for t in tuples]
    assert len(set(names)) == len(tuples)
    for name in names:
        assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert names == [cross_connection_name(*t) for t in tuples]


def test_long_names_are_truncated_with_a_hash() -> None:
    name = cross_connection_name("c" * 55, "nat", "firewall")
    assert len(name) <= 63 and name.startswith("c" * 40) and "--" in name
    assert name != cross_connection_name("c" * 55, "nat", "firewall2")


def test_side_order_matters() -> None:
    assert cross_connection_name("x", "a", "b") != cross_connection_name("x", "b", "a")


@pytest.mark.parametrize("name", ["eth1", "net1", "a", "x" * 15, "eth-1.2"])
def test_valid_interface_names(name: str) -> None:
    assert ifname_problem(name) is None


@pytest.mark.parametrize("name", ["", "x" * 16, "eth/1", "eth 1", "eth\t1", ".", ".."])
def test_invalid_interface_names(name: str) -> None:
    assert ifname_problem(name)


@pytest.mark.parametrize("name", ["", "A", "a_b", "-a", "a-", "a" * 64])
def test_invalid_dns_labels(name: str) -> None:
    assert dns_label_problem(name)
