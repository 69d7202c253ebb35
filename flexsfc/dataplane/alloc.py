"""Allocation of the numbers the maps are indexed by: cross-connection ids, port slots, Maglev pool regions.

Both allocators are rebuilt from the pinned maps when a data plane is opened and then kept current by
every write, so no write walks a whole map to find a free number.
"""

import bisect
import heapq
from collections.abc import Iterable


class FreeIds:
    """The free integers of [first, end): the smallest is taken first, as a linear scan would."""

    def __init__(self, first: int, end: int, used: Iterable[int]) -> None:
        taken = set(used)
        self._heap = [i for i in range(first, end) if i not in taken]  # ascending: already a heap

    def take(self) -> int | None:
        return heapq.heappop(self._heap) if self._heap else None

    def give(self, value: int) -> None:
        heapq.heappush(self._heap, value)

    def __len__(self) -> int:
        return len(self._heap)


class PoolGaps:
    """Free regions [start, end) of the Maglev slot pool, sorted by start; first fit."""

    def __init__(self, size: int, used: Iterable[tuple[int, int]]) -> None:
        self._gaps: list[tuple[int, int]] = []
        start = 0
        for begin, end in sorted(used):
            if begin > start:
                self._gaps.append((start, begin))
            start = max(start, end)
        if start < size:
            self._gaps.append((start, size))

    def take(self, length: int) -> int | None:
        for i, (begin, end) in enumerate(self._gaps):
            if end - begin >= length:
                if end - begin == length:
                    del self._gaps[i]
                else:
                    self._gaps[i] = (begin + length, end)
                return begin
        return None

    def give(self, begin: int, length: int) -> None:
        end = begin + length
        i = bisect.bisect(self._gaps, (begin, end))
        # Merge with the gap just before and just after, so first fit sees one region.
        if i > 0 and self._gaps[i - 1][1] == begin:
            i -= 1
            begin = self._gaps.pop(i)[0]
        if i < len(self._gaps) and self._gaps[i][0] == end:
            end = self._gaps.pop(i)[1]
        self._gaps.insert(i, (begin, end))

    def gaps(self) -> list[tuple[int, int]]:
        """The free regions [start, end), in pool order."""
        return list(self._gaps)
