"""Hand-assembled reference TC programs, for measuring what the cross-connection program costs
beyond the least any TC program does: `return retval;` and `return bpf_redirect[_peer](ifindex, 0);`.

Assembled here rather than compiled: they are a few instructions, and no build step or object file
has to come along with the tests and benchmarks that load them.
"""

import ctypes
import errno

from flexsfc.dataplane import libbpf

BPF_PROG_TYPE_SCHED_CLS = 3
_MOV64_IMM, _CALL, _EXIT = 0xB7, 0x85, 0x95  # BPF_ALU64|BPF_MOV|BPF_K, BPF_JMP|BPF_CALL, BPF_JMP|BPF_EXIT
_HELPER_REDIRECT, _HELPER_REDIRECT_PEER = 23, 155  # enum bpf_func_id


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> int:
    """One struct bpf_insn {u8 code; u8 dst:4, src:4; s16 off; s32 imm} as a little-endian u64."""
    return code | (dst | src << 4) << 8 | (off & 0xFFFF) << 16 | (imm & 0xFFFFFFFF) << 32


def load(name: bytes, insns: list[int]) -> int:
    """Load `insns` as a GPL SCHED_CLS program named `name`; returns its fd (the caller closes it)."""
    buf = (ctypes.c_uint64 * len(insns))(*insns)
    fd = int(
        libbpf.lib().bpf_prog_load(
            BPF_PROG_TYPE_SCHED_CLS, name, b"GPL", ctypes.addressof(buf), len(insns), None
        )
    )
    if fd < 0:  # libbpf 1.x: -errno, or -1 with errno set
        raise libbpf.BpfError("bpf_prog_load", -fd if fd != -1 else (ctypes.get_errno() or errno.EPERM))
    return fd


def load_constant_program(retval: int) -> int:
    """Reference TC program `return retval;` (2 instructions) for cost measurements; returns its fd."""
    return load(b"ref_constant", [insn(_MOV64_IMM, 0, imm=retval), insn(_EXIT)])


def load_redirect_program(ifindex: int, *, peer: bool = True) -> int:
    """Reference TC program `return bpf_redirect[_peer](ifindex, 0);` (4 instructions); returns its fd."""
    helper = _HELPER_REDIRECT_PEER if peer else _HELPER_REDIRECT
    insns = [
        insn(_MOV64_IMM, 1, imm=ifindex),
        insn(_MOV64_IMM, 2, imm=0),
        insn(_CALL, imm=helper),
        insn(_EXIT),
    ]
    return load(b"ref_redirect", insns)
