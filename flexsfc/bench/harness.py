"""Runs the benchmark sections, writes <out>/<section>.json and plots, and an index of the run.

A section that cannot run here (not root, a tool missing) is skipped with its reason; a section that
fails is recorded with its error and the others still run. Every section cleans up after itself,
including on Ctrl-C.
"""

import importlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexsfc.bench.context import (
    BenchContext,
    SectionSkipped,
    now_iso,
    read_json,
    run_envelope,
    write_json,
)


@dataclass(frozen=True)
class Section:
    """One section: flexsfc.bench.sections.<name>.run(ctx) returns its result envelope."""

    name: str  # also the value of `flexsfc bench --only` and the name of its JSON file
    title: str
    needs_root: bool = True


SECTIONS: tuple[Section, ...] = (
    Section("resources", "Fig. 4: requested CPU, NF vs chain scaling", needs_root=False),
    Section("traffic", "Fig. 5: veth / bridge / xc throughput and latency"),
    Section("switched", "Paired rates and latency, the path switched under one sender"),
    Section("path_cost", "CPU per packet by part of the path (perf samples)"),
    Section("reaction", "Figs. 6-7: reaction time"),
    Section("remap", "Flows remapped on scale events: Maglev vs modulo"),
    Section("scale_loss", "Packets lost and flows moved during scaling"),
    Section("control_plane", "Reconcile time for 1-1000 xcs"),
    Section("session_fill", "Per-packet cost as sessions fill"),
    Section("dataplane_micro", "Data-plane microbenchmarks"),
    Section("cni_latency", "CNI ADD/DEL latency"),
    Section("multinode", "Cross-node cross-connection vs plain VXLAN vs same node"),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)


def _load(section: Section) -> Callable[[BenchContext], dict[str, Any]]:
    # Imported when run: a section's dependencies (the agent, the data plane...) load only if it runs.
    run: Callable[[BenchContext], dict[str, Any]] = importlib.import_module(
        f"flexsfc.bench.sections.{section.name}"
    ).run
    return run


def run_section(section: Section, ctx: BenchContext) -> dict[str, Any]:
    """Run one section and write its JSON and plots; returns its index entry."""
    started = time.monotonic()
    entry: dict[str, Any] = {"title": section.title, "started": now_iso()}
    try:
        if section.needs_root and os.geteuid() != 0:
            raise SectionSkipped("needs root (network namespaces, eBPF)")
        result = _load(section)(ctx)
    except SectionSkipped as exc:
        entry.update(status="skipped", reason=str(exc))
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
    from flexsfc.bench.report.plots import PLOTTERS

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
    index = {**run_envelope(ctx, started), "sections": sections}
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
