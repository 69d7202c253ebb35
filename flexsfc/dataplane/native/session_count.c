// SPDX-License-Identifier: Apache-2.0
/*
 * Sessions per cross-connection, counted in one walk of a session table, compiled by
 * flexsfc/dataplane/build.py and called through ctypes (flexsfc/dataplane/stats.py).
 *
 * The metrics exporter counts the sessions on every scrape; at 1M sessions the walk takes a few
 * hundred milliseconds of batch syscalls. Done here it runs entirely inside one foreign call, which
 * ctypes makes without the GIL: the agent's reconcile thread never waits for the scrape, neither for a
 * lock nor for the interpreter (a Python loop over the batches handed the GIL back and forth and
 * added milliseconds to reconcile steps).
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Adds, for every key of the hash map `fd` (keys of `key_size` bytes whose first 32-bit word is the
 * cross-connection id, values of `value_size` bytes), one to counts[id] when id < ncounts. Reads
 * `chunk` entries per BPF_MAP_LOOKUP_BATCH. Returns the number of keys seen, or -errno. */
long count_by_xc(int fd, uint32_t key_size, uint32_t value_size, uint32_t chunk, uint64_t *counts,
		 uint32_t ncounts)
{
	char *keys = malloc((size_t)key_size * chunk);
	char *values = malloc((size_t)value_size * chunk);
	uint64_t token[8] = {0}; /* a hash map's batch position: a bucket index */
	long total = 0;
	int first = 1;

	if (!keys || !values) {
		free(keys);
		free(values);
		return -ENOMEM;
	}
	for (;;) {
		union bpf_attr attr;

		memset(&attr, 0, sizeof(attr));
		attr.batch.map_fd = fd;
		attr.batch.in_batch = first ? 0 : (uint64_t)(uintptr_t)token;
		attr.batch.out_batch = (uint64_t)(uintptr_t)token;
		attr.batch.keys = (uint64_t)(uintptr_t)keys;
		attr.batch.values = (uint64_t)(uintptr_t)values;
		attr.batch.count = chunk;
		long rc = syscall(__NR_bpf, BPF_MAP_LOOKUP_BATCH, &attr, sizeof(attr));
		int err = rc < 0 ? errno : 0;

		if (rc < 0 && err != ENOENT) {
			total = -err;
			break;
		}
		for (uint32_t i = 0; i < attr.batch.count; i++) {
			uint32_t xc;

			memcpy(&xc, keys + (size_t)i * key_size, sizeof(xc));
			if (xc < ncounts)
				counts[xc]++;
		}
		total += attr.batch.count;
		if (err == ENOENT) /* the last batch */
			break;
		first = 0;
	}
	free(keys);
	free(values);
	return total;
}
