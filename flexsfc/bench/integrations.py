"""Sections whose measurements belong to other components' own benchmark modules.

flexsfc.bench.reaction (agent / local runtime), flexsfc.bench.dataplane_micro (data plane) and
flexsfc.bench.cni_latency (CNI plugin) measure their components; these adapters call their public
functions and put the results in the common envelope. A module that is not there skips its section.
"""

import importlib
import time
from types import ModuleType
from typing import Any

from flexsfc.bench.common import BenchContext, SectionSkipped, section_result


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise SectionSkipped(f"{name} is not available yet") from None
        raise


def run_reaction(ctx: BenchContext) -> dict[str, Any]:
    module = _module("flexsfc.bench.reaction")
    if hasattr(module, "run"):
        return module.run(ctx)
    raise SectionSkipped("flexsfc.bench.reaction has no run(ctx) entry point yet")


def run_dataplane_micro(ctx: BenchContext) -> dict[str, Any]:
    module = _module("flexsfc.bench.dataplane_micro")
    started = time.monotonic()
    return section_result(ctx, "dataplane_micro", module.run_all(quick=ctx.quick), started)


def run_cni_latency(ctx: BenchContext) -> dict[str, Any]:
    return _module("flexsfc.bench.cni_latency").run(ctx)
