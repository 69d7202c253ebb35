"""The allocators behind cross-connection ids, port slots and Maglev pool regions (no root, no maps)."""

import random

from flexsfc.dataplane.alloc import FreeIds, PoolGaps


def test_free_ids_hand_out_the_smallest_first_and_take_back_what_is_given() -> None:
    ids = FreeIds(1, 6, used={2, 4})
    assert [ids.take(), ids.take()] == [1, 3]
    ids.give(1)
    assert [ids.take(), ids.take(), ids.take()] == [1, 5, None]
    assert len(ids) == 0


def test_free_ids_match_a_linear_scan_of_the_used_set() -> None:
    rng = random.Random(7)
    ids, used = FreeIds(0, 64, used=()), set[int]()
    for _ in range(2000):
        if used and rng.random() < 0.45:
            value = rng.choice(sorted(used))
            used.remove(value)
            ids.give(value)
        else:
            expected = next((i for i in range(64) if i not in used), None)
            assert ids.take() == expected
            if expected is not None:
                used.add(expected)


def test_pool_gaps_start_from_the_used_regions() -> None:
    gaps = PoolGaps(100, used=[(40, 60), (0, 10), (55, 70)])  # overlapping and unsorted
    assert gaps.gaps() == [(10, 40), (70, 100)]
    assert PoolGaps(10, used=[(0, 10)]).gaps() == []


def test_pool_gaps_first_fit_and_merge_on_give() -> None:
    gaps = PoolGaps(100, used=[])
    a, b, c = gaps.take(30), gaps.take(30), gaps.take(30)
    assert (a, b, c) == (0, 30, 60)
    assert gaps.take(20) is None  # only 10 left
    gaps.give(30, 30)
    assert gaps.take(40) is None  # 30 free in the middle, 10 at the end: not adjacent
    gaps.give(0, 30)
    gaps.give(60, 30)
    assert gaps.gaps() == [(0, 100)]  # every region merged back into one
    assert gaps.take(100) == 0 and gaps.gaps() == []


def test_pool_gaps_never_hand_out_overlapping_regions() -> None:
    rng = random.Random(11)
    size = 4096
    gaps, held = PoolGaps(size, used=[]), dict[int, int]()
    for _ in range(3000):
        if held and rng.random() < 0.5:
            begin = rng.choice(sorted(held))
            gaps.give(begin, held.pop(begin))
        else:
            length = rng.choice((7, 13, 251, 509))
            begin = gaps.take(length)
            if begin is None:
                continue
            assert begin >= 0 and begin + length <= size
            assert all(begin + length <= b or b + n <= begin for b, n in held.items())
            held[begin] = length
        free = sum(end - start for start, end in gaps.gaps())
        assert free + sum(held.values()) == size
