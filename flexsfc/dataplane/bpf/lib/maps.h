/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps, the last third of the contract: flexsfc/dataplane/maps.py names them (MAP_NAMES, the
 * pin file names), mirrors their key and value types (MAP_LAYOUTS) and fixed capacities
 * (MAP_CAPACITIES); tests/unit/dataplane/test_contract.py checks all three against the compiled
 * object's BTF. The loader overrides max_entries of the session tables and of the two [cpu][entry]
 * arrays at load time.
 */
#ifndef XC_MAPS_H
#define XC_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32); /* host ifindex */
	__type(value, struct port_info);
} ports SEC(".maps");

/* The same entries as `ports`, indexed by ifindex when it is below PORT_INDEX_SIZE (xc 0 = none):
 * an array lookup is inlined and touches one cache line, where a hash lookup walks a bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_INDEX_SIZE);
	__type(key, __u32);
	__type(value, struct port_info);
} ports_by_index SEC(".maps");

/* Per-CPU copies of every slot in a plain array, [cpu][slot] (the loader sets max_entries to
 * MAX_PORTS x possible CPUs): one load reaches a port's occupant and this CPU's counters, where a
 * per-CPU array first loads the per-CPU pointer (two dependent cache misses in the live path). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct port_slot);
} port_slots SEC(".maps");

/* Maglev tables: per (xc, side) a descriptor {offset (low 32 bits), size (high 32 bits)} into the
 * slot pool. The control plane writes a new table into the idle half of the (xc, side) double buffer
 * through mmap, then publishes it with one aligned 8-byte store: a packet sees the old or the new
 * table, never a mix (see docs/dataplane.md). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_XC * 2);
	__type(key, __u32);
	__type(value, __u64);
} maglev_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, POOL_SLOTS);
	__type(key, __u32);
	__type(value, struct port_ref);
} maglev_pool SEC(".maps");

/* Confirmed sessions: flows seen from both sides. A plain (preallocated) hash, not an LRU: nothing
 * the program does evicts an entry, so a flood of new flows cannot push an established session out
 * (and, after a scale event, onto another replica). The agent deletes sessions idle for longer than
 * their protocol's timeout (flexsfc/dataplane/sweep.py). When full, new flows stay unconfirmed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20); /* set at load time by the loader */
	__type(key, struct flow_key4);
	__type(value, struct session_value);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18); /* set at load time by the loader */
	__type(key, struct flow_key);
	__type(value, struct session_value);
} sessions6 SEC(".maps");

/* Unconfirmed flows: the first packet of every flow lands here (an LRU: cheap to churn, the only
 * table a one-way flood of spoofed sources can fill). A packet from the other side moves the flow
 * to `sessions`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18); /* set at load time by the loader */
	__type(key, struct flow_key4);
	__type(value, struct session_value);
} unconfirmed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16); /* set at load time by the loader */
	__type(key, struct flow_key);
	__type(value, struct session_value);
} unconfirmed6 SEC(".maps");

/* The session clock per CPU, [cpu] (the loader sets max_entries to the possible CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct session_clock_cache);
} session_clocks SEC(".maps");

/* Confirmed sessions counted per cross-connection: inserted by the program (here, per CPU) and
 * deleted by the agent (`session_reclaims`, its only writer). Their difference is the number of
 * entries of that xc in `sessions` and `sessions6`, exact and without walking them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_XC);
	__type(key, __u32);
	__type(value, __u64);
} session_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_XC);
	__type(key, __u32);
	__type(value, __u64);
} session_reclaims SEC(".maps");

/* The flow cache (flow_cache.h), [cpu][entry]: the loader sets max_entries to FLOW_CACHE_SIZE x possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FLOW_CACHE_SIZE);
	__type(key, __u32);
	__type(value, struct flow_cache_entry);
} flow_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct frag_key);
	__type(value, struct port_ref); /* where the first fragment went */
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NEIGHBOURS);
	__type(key, struct neigh_key);
	__type(value, struct neigh_val);
} neighbours SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct neigh_key);
	__type(value, struct neigh_val);
} neighbours_learned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} events SEC(".maps");

/* Multi-node (tunnel.h): per slot, a remote port's tunnel endpoint and every port's sender id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct tunnel_port);
} tunnel_ports SEC(".maps");

/* Tunnel id (VNI) -> slot of the local port it names. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} tunnel_targets SEC(".maps");

/* (node, xc, sender id, side) -> slot of this node's remote port for that sender. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, struct tunnel_sender_key);
	__type(value, __u32);
} tunnel_senders SEC(".maps");

/* Addresses (host order) of the nodes allowed to send tunnel packets; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NODES);
	__type(key, __u32);
	__type(value, __u32);
} tunnel_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_scratch);
} tunnel_scratch SEC(".maps");

/* [0]: ifindex of the node's VXLAN device (control plane only: teardown and upgrades find it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tunnel_device SEC(".maps");

/* Control-plane state, pinned with the rest so a restarted agent finds it again; the program never
 * reads these two. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_XC);
	__type(key, char[NAME_LEN]); /* CrossConnection name, NUL padded */
	__type(value, struct xc_record);
} xc_registry SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, char[NAME_LEN]); /* replica identity (orders the Maglev table) */
} port_identity SEC(".maps");

#endif /* XC_MAPS_H */
