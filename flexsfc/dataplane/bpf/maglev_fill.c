// SPDX-License-Identifier: Apache-2.0
/*
 * Maglev table population (the sequential turn-taking loop of the Maglev paper), compiled once by
 * flexsfc/dataplane/build.py into a shared object and called through ctypes from maglev.py: the same
 * loop in CPython costs milliseconds, here microseconds. Python computes the permutations' (offset,
 * skip) pairs; this only fills. Returns 0, or -1 on bad arguments.
 */
#include <stdint.h>

int maglev_fill(const uint64_t *offsets, const uint64_t *skips, uint32_t count, uint32_t size,
		uint64_t *next, int32_t *table)
{
	if (count == 0 || size == 0 || count > size)
		return -1;
	for (uint32_t s = 0; s < size; s++)
		table[s] = -1;
	for (uint32_t i = 0; i < count; i++)
		next[i] = 0;
	uint32_t filled = 0;
	for (;;) {
		for (uint32_t i = 0; i < count; i++) {
			uint64_t j = next[i];
			uint32_t slot = (uint32_t)((offsets[i] + j * skips[i]) % size);
			while (table[slot] >= 0) {
				j++;
				slot = (uint32_t)((offsets[i] + j * skips[i]) % size);
			}
			next[i] = j + 1;
			table[slot] = (int32_t)i;
			if (++filled == size)
				return 0;
		}
	}
}
