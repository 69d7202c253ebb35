"""Run the cross-connection program on crafted frames (BPF_PROG_TEST_RUN) and see where they went.

The kernel runs the program as if the frame arrived at TC ingress of `ifindex` (which must exist in
the caller's network namespace), but does not perform the redirect; the target is read back from
the per-port counters, which the program bumps for the port it picks.
"""

from dataclasses import dataclass

from flexsfc.dataplane import libbpf
from flexsfc.dataplane.facade import Dataplane

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7


@dataclass(frozen=True)
class Verdict:
    action: int  # TC_ACT_*
    target: int | None  # host ifindex the packet was sent to (None when dropped or a reply)
    data: bytes  # the frame after the program (replies are built in place)
    drops: dict[str, int]  # drop reasons counted by this run

    @property
    def redirected(self) -> bool:
        return self.action == TC_ACT_REDIRECT

    @property
    def dropped(self) -> bool:
        return self.action == TC_ACT_SHOT


def run(dp: Dataplane, frame: bytes, ifindex: int) -> Verdict:
    """One frame through the program, arriving from port `ifindex`."""
    before_ports = {i: s.to_port_packets for i, s in dp.port_stats().items()}
    before_drops = dp.drop_stats()
    result = libbpf.prog_test_run(dp.prog_fd, frame, ifindex=ifindex)
    after_ports = dp.port_stats()
    targets = [i for i, s in after_ports.items() if s.to_port_packets != before_ports.get(i, 0)]
    drops = {k: v - before_drops[k] for k, v in dp.drop_stats().items() if v != before_drops[k]}
    return Verdict(result.retval, targets[0] if len(targets) == 1 else None, result.data, drops)


def run_repeat(dp: Dataplane, frame: bytes, ifindex: int, repeat: int) -> libbpf.ProgRunResult:
    """The kernel's average run time per repetition (ns) for a frame repeated `repeat` times."""
    return libbpf.prog_test_run(dp.prog_fd, frame, ifindex=ifindex, repeat=repeat)
