// SPDX-License-Identifier: Apache-2.0
/*
 * The agent's write of a port's state byte in the mmap of `port_slots`, compiled by
 * flexsfc/dataplane/build.py and called through ctypes (flexsfc/dataplane/ports/states.py).
 *
 * The CNI plugin marks a port leaving from another process at any moment (on DEL, before its veth
 * goes), and leaving is final. A plain read-then-write by the agent could overwrite that mark in the
 * gap between its read and its write, making a vanishing port a target again. A compare-and-swap
 * per byte closes the gap: whichever write comes second, a leaving mark survives.
 */
#include <stddef.h>
#include <stdint.h>

/* Sets `count` state bytes, `stride` bytes apart from `first`, to `desired`, except a byte that holds
 * `final`, which keeps it. Returns how many bytes held `final`. */
int set_state_unless_final(uint8_t *first, size_t stride, int count, uint8_t desired, uint8_t final)
{
	int kept = 0;
	for (int i = 0; i < count; i++) {
		uint8_t *state = first + (size_t)i * stride;
		uint8_t seen = __atomic_load_n(state, __ATOMIC_ACQUIRE);
		/* A failed exchange reloads `seen`: retry until the byte is ours or final. */
		while (seen != final &&
		       !__atomic_compare_exchange_n(state, &seen, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			;
		kept += seen == final;
	}
	return kept;
}
