"""Runs the benchmark sections, writes <out>/<section>.json and plots, and an index of the run.

A section that cannot run here (a component not built yet, not root) is skipped with its reason; a
section that fails is recorded with its error and the others still run. Every section cleans up
after itself, including on Ctrl-C.
"""

import importlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexsfc.bench.common import (
    BenchContext,
    SectionSkipped,
    machine_info,
    now_iso,
    read_json,
    source_info,
    write_json,
)


@dataclass(frozen=True)
class Section:
    name: str
    target: str  # "module:function" taking a BenchContext and returning the section's result dict
    title: str
    needs_root: bool = True


SECTIONS: tuple[Section, ...] = (
    Section("resources", "flexsfc.bench.resources:run", "Fig. 4: requested CPU, NF vs chain scaling", False),
    Section("traffic", "flexsfc.bench.traffic:run", "Fig. 5: veth / bridge / xc throughput and latency"),
    Section(
        "switched",
        "flexsfc.bench.switched:run",
        "Paired rates and latency, the path switched under one sender",
    ),
    Section("path_cost", "flexsfc.bench.path_cost:run", "CPU per packet by part of the path (perf samples)"),
    Section("reaction", "flexsfc.bench.integrations:run_reaction", "Figs. 6-7: reaction time"),
    Section("remap", "flexsfc.bench.remap:run", "Flows remapped on scale events: Maglev vs modulo"),
    Section("scale_loss", "flexsfc.bench.scale_loss:run", "Packets lost and flows moved during scaling"),
    Section("control_plane", "flexsfc.bench.control_plane:run", "Reconcile time for 1-1000 xcs"),
    Section("session_fill", "flexsfc.bench.session_fill:run", "Per-packet cost as sessions fill"),
    Section(
        "dataplane_micro", "flexsfc.bench.integrations:run_dataplane_micro", "Data-plane microbenchmarks"
    ),
    Section("cni_latency", "flexsfc.bench.integrations:run_cni_latency", "CNI ADD/DEL latency"),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)


def _load(target: str) -> Callable[[BenchContext], dict[str, Any]]:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def run_section(section: Section, ctx: BenchContext) -> dict[str, Any]:
    """Run one section and write its JSON and plots; returns its index entry."""
    started = time.monotonic()
    entry: dict[str, Any] = {"title": section.title, "started": now_iso()}
    try:
        if section.needs_root and os.geteuid() != 0:
            raise SectionSkipped("needs root (network namespaces, eBPF)")
        result = _load(section.target)(ctx)
    except SectionSkipped as exc:
        entry.update(status="skipped", reason=str(exc))
    except ModuleNotFoundError as exc:
        entry.update(status="skipped", reason=f"component not available: {exc}")
    except Exception as exc:  # one broken section must not hide the others' results
        entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    else:
        path = ctx.out_dir / f"{section.name}.json"
        write_json(path, result)
        entry.update(
            status="ok", json=path.name, plots=[p.name for p in render_plots(section.name, result, ctx)]
        )
    entry["duration_s"] = round(time.monotonic() - started, 2)
    ctx.log(f"bench: {section.name}: {entry['status']} in {entry['duration_s']} s {entry.get('reason', '')}")
    return entry


def render_plots(name: str, result: dict[str, Any], ctx: BenchContext) -> list[Path]:
    from flexsfc.bench.plots import PLOTTERS

    plotter = PLOTTERS.get(name)
    if plotter is None:
        return []
    try:
        return plotter(result, ctx.out_dir)
    except Exception as exc:  # a plot problem must not lose the measured JSON
        ctx.log(f"bench: {name}: plot failed: {type(exc).__name__}: {exc}")
        return []


def run(ctx: BenchContext, only: tuple[str, ...] = ()) -> dict[str, Any]:
    unknown = [name for name in only if name not in SECTION_NAMES]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTION_NAMES)}")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    index_path = ctx.out_dir / "index.json"
    # --only refreshes some sections and keeps the others' entries from the previous run.
    previous = read_json(index_path).get("sections", {}) if only and index_path.exists() else {}
    sections = dict(previous)
    for section in SECTIONS:
        if only and section.name not in only:
            continue
        sections[section.name] = run_section(section, ctx)
    index = {
        "command": ctx.command,
        "quick": ctx.quick,
        "finished": now_iso(),
        "duration_s": round(time.monotonic() - started, 2),
        "machine": machine_info(),
        "source": source_info(),
        "sections": sections,
    }
    write_json(index_path, index)
    return index


def replot(ctx: BenchContext) -> list[Path]:
    """Regenerate every plot from the JSON results already in the output directory."""
    written: list[Path] = []
    for section in SECTIONS:
        path = ctx.out_dir / f"{section.name}.json"
        if path.exists():
            written += render_plots(section.name, read_json(path), ctx)
    return written
