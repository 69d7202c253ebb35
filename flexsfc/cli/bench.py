"""`flexsfc bench`: reproduce the paper's evaluation (and more) on this machine."""

import os
import signal
import sys
from pathlib import Path

import click

from flexsfc.bench.harness import SECTION_NAMES

DEFAULT_OUT = Path("docs/results")


def _interrupt_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C, so every section's clean-up (finally blocks) runs.

    Only in this process: helpers forked from it (pyroute2 forks one per network namespace it
    talks to) inherit the handler and must keep dying quietly on SIGTERM.
    """
    main_pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.command()
@click.option("--quick", is_flag=True, help="Short runs (under 2 minutes) for smoke tests.")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(SECTION_NAMES),
    help="Run only this section (repeatable); other sections' previous results are kept.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for the JSON results and PNG plots.",
)
@click.option("--seed", default=1, show_default=True, help="Seed of the interleaving order and flow sets.")
@click.option(
    "--rounds",
    "traffic_rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Paired rounds of the traffic and multinode sections (default 9 and 15, 1 with --quick): more "
    "rounds narrow the confidence intervals that decide their targets.",
)
@click.option(
    "--chain",
    "traffic_chains",
    multiple=True,
    type=click.Choice(["2", "3"]),
    help="Traffic section: measure only this chain length in pods (repeatable; default both).",
)
@click.option(
    "--udp-senders",
    type=click.IntRange(min=1),
    default=None,
    help="Traffic and multinode sections: parallel 64 B UDP senders (default: the count that delivers "
    "the most packets on the reference path, direct veth or plain VXLAN, found by a short calibration).",
)
@click.option(
    "--baseline",
    default=None,
    metavar="REV",
    help="Multinode section: also measure the same-node cross-connection with the data plane of this "
    "git revision (e.g. HEAD before committing a data-plane change), interleaved: the before/after check.",
)
@click.option("--replot", is_flag=True, help="Only regenerate the plots from the JSON results in --out.")
def bench(
    quick: bool,
    only: tuple[str, ...],
    out_dir: Path,
    seed: int,
    traffic_rounds: int | None,
    traffic_chains: tuple[str, ...],
    udp_senders: int | None,
    baseline: str | None,
    replot: bool,
) -> None:
    """Run the evaluation: Figures 4-7 of the paper plus remapping, loss, scale and session-fill.

    Needs root for every section but `resources`. Writes <out>/<section>.json, <out>/*.png and
    <out>/index.json (status of each section, machine, command).
    """
    from flexsfc.bench import harness
    from flexsfc.bench.context import BenchContext, command_line

    ctx = BenchContext(
        out_dir=out_dir,
        quick=quick,
        command=command_line(),
        seed=seed,
        log=lambda line: click.echo(line, err=True),
        traffic_rounds=traffic_rounds,
        traffic_chains=tuple(int(pods) for pods in traffic_chains),
        udp_senders=udp_senders,
        baseline=baseline,
    )
    if replot:
        for path in harness.replot(ctx):
            click.echo(str(path))
        return
    _interrupt_on_sigterm()
    try:
        index = harness.run(ctx, only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("bench: interrupted; everything created so far was removed", err=True)
        sys.exit(130)
    for name, entry in index["sections"].items():
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        click.echo(f"{name:16} {entry['status']:8} {entry.get('duration_s', 0):7.1f} s{reason}")
    click.echo(f"results in {out_dir}/ (index.json)")
    if any(entry["status"] == "failed" for entry in index["sections"].values()):
        sys.exit(1)
