"""One autoscaling episode on an example chain, recorded as JSON and plotted (root).

    python -m flexsfc.autoscale.figure --example examples/transparent-firewall --nf firewall \
        --out docs/results

Brings the chain up on its own local runtime (state dir, pin dir and namespace prefix of its own),
runs :func:`flexsfc.autoscale.episode.run_autoscale_episode` through the supervisor, tears everything
down, and writes <out>/autoscale-episode.json and <out>/autoscale-episode.png: the replica count the
HPA algorithm chose and each replica's rx pps over time, with the target.
"""

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flexsfc.autoscale.episode import EpisodeResult, RuntimeAccess, run_autoscale_episode
from flexsfc.autoscale.local import format_tick


def episode_json(result: EpisodeResult) -> dict[str, Any]:
    start = result.ticks[0].at if result.ticks else 0.0
    return {
        "nf": result.nf,
        "targetPps": result.target_pps,
        "moves": [{"t": t, "from": old, "to": new} for t, old, new in result.moves],
        "scaleOutSeconds": result.scale_out_seconds,
        "scaleInSeconds": result.scale_in_seconds,
        "sessionExchanges": result.session_exchanges,
        "sessionError": result.session_error,
        "sessionKeptReplica": result.session_kept_replica,
        "drained": result.drained,
        "load": [{"t": t - start, "pps": pps} for t, pps in result.load],
        "ticks": [
            {
                "t": tick.at - start,
                "current": tick.decision.current,
                "desired": tick.desired,
                "reason": tick.decision.reason,
                "pps": tick.pps,
            }
            for tick in result.ticks
        ],
        "summary": dict(result.summary()),
    }


def plot_episode(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = data["ticks"]
    times = [t["t"] for t in ticks]
    fig, (ax_pps, ax_rep) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), height_ratios=(2, 1))
    pods = sorted({pod for t in ticks for pod in t["pps"]})
    for pod in pods:
        points = [(t["t"], t["pps"][pod]) for t in ticks if t["pps"].get(pod) is not None]
        if points:
            ax_pps.plot(*zip(*points, strict=True), marker=".", label=pod)
    ax_pps.axhline(data["targetPps"], color="grey", linestyle="--", label="target per replica")
    load = data.get("load", [])
    if load:
        xs = [p["t"] for p in load]
        ax_pps.step(xs, [p["pps"] for p in load], where="post", color="lightgrey", label="offered load (pps)")
    ax_pps.set_ylabel("rx packets/s per replica")
    ax_pps.legend(fontsize="small", loc="upper right")
    ax_pps.set_title(f"{data['nf']}: HPA algorithm on the data plane's per-replica rx rate")
    ax_rep.step(times, [t["desired"] for t in ticks], where="post", color="black")
    ax_rep.set_ylabel("replicas")
    ax_rep.set_xlabel("seconds")
    ax_rep.set_yticks(range(1, max(t["desired"] for t in ticks) + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="examples/transparent-firewall")
    parser.add_argument("--nf", default="firewall")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--hold-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    from flexsfc.local import control
    from flexsfc.local.config import RuntimeConfig
    from flexsfc.model.loader import load_plan

    tag = uuid.uuid4().hex[:6]
    plan = load_plan(args.example)
    config = RuntimeConfig(
        state_dir=tempfile.mkdtemp(prefix="flexsfc-autoscale-figure-"),
        pin_dir=f"/sys/fs/bpf/flexsfc-autoscale-figure-{tag}",
        netns_prefix=f"fxa{tag[:4]}",
    )
    control.start_supervisor(config)
    try:
        control.request(config, "apply", path=str(Path(args.example).resolve()))
        control.request(config, "wait_ready", timeout=60)
        result = run_autoscale_episode(
            RuntimeAccess.supervisor(config, plan),
            args.nf,
            hold_seconds=args.hold_seconds,
            on_tick=lambda tick: print(time.strftime("%H:%M:%S"), format_tick(tick, 400), flush=True),
        )
    finally:
        errors = control.down(config)
        for error in errors:
            print("down:", error)
    data = episode_json(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoscale-episode.json").write_text(json.dumps(data, indent=1) + "\n")
    plot_episode(data, args.out / "autoscale-episode.png")
    for what, value in result.summary():
        print(f"{what}: {value}")
    print(f"wrote {args.out / 'autoscale-episode.json'} and {args.out / 'autoscale-episode.png'}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
