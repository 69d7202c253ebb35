// SPDX-License-Identifier: Apache-2.0
/*
 * Maglev table population (the sequential turn-taking loop of the Maglev paper), compiled once by
 * flexsfc/dataplane/build.py into a shared object and called through ctypes from maglev.py: the same
 * loop in CPython costs milliseconds, here microseconds. Python computes the permutations' (offset,
 * skip) pairs; this only fills. Returns 0, or -1 on bad arguments (or no memory).
 *
 * Per fill at size 16381 with 5 replicas (about 68k probes), interleaved on the 2-vCPU VM: 345 us
 * with a modulo per probe, 300 us stepping the position instead, 257 us with the byte map below.
 * What is left is mostly the mispredicted exit of the probe loop, one per slot.
 */
#include <stdint.h>
#include <stdlib.h>

int maglev_fill(const uint64_t *offsets, const uint64_t *skips, uint32_t count, uint32_t size,
		uint64_t *next, int32_t *table)
{
	if (count == 0 || size == 0 || count > size)
		return -1;
	for (uint32_t i = 0; i < count; i++)
		if (offsets[i] >= size || skips[i] == 0 || skips[i] >= size)
			return -1;
	/* Which slots are taken, one byte each: the probes hit this (16 KB at size 16381, in L1) rather
	 * than the 4-byte table. */
	uint8_t *taken = calloc(size, 1);
	if (!taken)
		return -1;
	/* next[i]: the slot replica i's permutation points at now, (offset + j * skip) % size for its
	 * j-th preference. Stepping it by one addition and one conditional subtraction instead of the
	 * modulo per probe: the probes are most of the work (about size x ln(size) of them in all), and
	 * a 64-bit division costs tens of cycles each. */
	for (uint32_t i = 0; i < count; i++)
		next[i] = offsets[i];
	uint32_t filled = 0;
	for (;;) {
		for (uint32_t i = 0; i < count; i++) {
			uint64_t slot = next[i];
			const uint64_t skip = skips[i];
			while (taken[slot]) {
				slot += skip;
				if (slot >= size)
					slot -= size;
			}
			taken[slot] = 1;
			table[slot] = (int32_t)i;
			slot += skip;
			next[i] = slot >= size ? slot - size : slot;
			if (++filled == size) {
				free(taken);
				return 0;
			}
		}
	}
}
