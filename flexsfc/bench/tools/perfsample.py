"""System-wide CPU-clock sampling with `perf`: where the CPU time of a measured block went, by
kernel and user function.

`perf record -a -e cpu-clock` needs no hardware counters (this VM has none) and sees every CPU,
softirq work included, so the samples of one function divided by the sampling frequency are the CPU
time it took during the block. Inside a VM a sample lands where the timer interrupt is taken, so
the attribution to single functions is approximate; sums over a group of functions are steadier.
"""

import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flexsfc.bench.tools.process import communicate_or_kill

SAMPLE_HZ = 4999  # not a multiple of the kernel's tick, so samples do not lock onto it
START_S = 0.2  # perf needs this long to start sampling on every CPU
STOP_SLACK_S = 30  # beyond the sampled time before a perf that does not stop is killed
_LINE = re.compile(r"^\s*(\d+)\s+\[[^\]]+\]\s+(\S+)")
_CLONE_SUFFIX = re.compile(r"\.(?:constprop|isra|part|cold|llvm)\.\d+")

T = TypeVar("T")


class PerfUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Profile:
    samples: Counter[str]  # function name (compiler clone suffixes removed) -> samples
    hz: int

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def seconds(self, names: Callable[[str], object]) -> float:
        """CPU seconds spent in the functions whose name `names` accepts."""
        return sum(n for name, n in self.samples.items() if names(name)) / self.hz


def available() -> str | None:
    """None when `perf` can sample here, else why not."""
    if shutil.which("perf") is None:
        return "perf not installed (Debian package linux-perf): run scripts/setup.sh"
    return None


def sample(block: Callable[[], T], seconds: float, hz: int = SAMPLE_HZ) -> tuple[T, Profile]:
    """Runs `block` while sampling every CPU for `seconds` (started START_S before it)."""
    with tempfile.TemporaryDirectory(prefix="flexsfc-perf-") as tmp:
        data = Path(tmp) / "perf.data"
        argv = ["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", str(hz), "-o", str(data)]
        recorder = subprocess.Popen(
            [*argv, "--", "sleep", f"{seconds + START_S:.2f}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(START_S)
            result = block()
        finally:
            output = communicate_or_kill(recorder, seconds + STOP_SLACK_S)
        if output is None:
            raise PerfUnavailable(f"perf record did not stop within {seconds + STOP_SLACK_S:.0f} s")
        err = output[1]
        if recorder.returncode != 0:
            raise PerfUnavailable(f"perf record failed ({recorder.returncode}): {err.strip()[-300:]}")
        return result, Profile(read_report(data), hz)


def read_report(data: Path) -> Counter[str]:
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "sym", "--stdio", "-F", "sample,sym"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if report.returncode != 0:
        raise PerfUnavailable(f"perf report failed ({report.returncode}): {report.stderr.strip()[-300:]}")
    return parse_report(report.stdout)


def parse_report(text: str) -> Counter[str]:
    """Samples per function from `perf report --stdio -F sample,sym` output."""
    samples: Counter[str] = Counter()
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            samples[_CLONE_SUFFIX.sub("", match.group(2))] += int(match.group(1))
    return samples
