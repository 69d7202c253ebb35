"""Maglev table build: balance, determinism, minimal disruption (pure computation, no root)."""

import numpy as np
import pytest

from flexsfc.dataplane.maglev import build_table


def _ids(n: int) -> list[str]:
    return [f"pod-{i:03d}" for i in range(n)]


@pytest.mark.parametrize("count", [1, 4, 10, 100])
def test_table_is_balanced_and_full(count: int) -> None:
    table = build_table(_ids(count), 4093)
    per_replica = np.bincount(table, minlength=count)
    assert per_replica.sum() == 4093
    assert per_replica.max() - per_replica.min() <= 1


def test_same_replicas_same_table_in_any_order() -> None:
    ids = _ids(7)
    assert np.array_equal(build_table(ids, 4093), build_table(list(reversed(ids)), 4093))


def test_native_fill_matches_python() -> None:
    ids = _ids(5)
    assert np.array_equal(build_table(ids, 1021), build_table(ids, 1021, native=False))


@pytest.mark.parametrize("count", [2, 4, 8])
def test_adding_a_replica_remaps_at_most_its_share(count: int) -> None:
    before = np.array(_ids(count))[build_table(_ids(count), 4093)]
    after = np.array(_ids(count + 1))[build_table(_ids(count + 1), 4093)]
    moved = float(np.mean(before != after))
    assert moved <= 1 / (count + 1) + 0.01


def test_bad_sizes_are_rejected_with_the_field() -> None:
    with pytest.raises(ValueError, match="prime"):
        build_table(_ids(2), 4096)
    with pytest.raises(ValueError, match="too small"):
        build_table(_ids(30), 251)
    with pytest.raises(ValueError, match="unique"):
        build_table(["a", "a"], 251)
