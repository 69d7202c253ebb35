"""`flexsfc autoscale`: scale one NF of the running local runtime on the packets per second it receives."""

import time

import click

from flexsfc.autoscale.local import (
    DEFAULT_PERIOD_SECONDS,
    LOCAL_SCALE_DOWN_WINDOW_SECONDS,
    LocalAutoscaler,
    StatusTarget,
    TargetNotFound,
    Tick,
    format_tick,
    local_spec,
    next_tick,
)
from flexsfc.local.config import ENV_STATE_DIR, RuntimeConfig


@click.command()
@click.argument("nf")
@click.option(
    "--target-pps",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="Packets per second each replica should receive (HPA averageValue).",
)
@click.option("--min", "min_replicas", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max", "max_replicas", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--period",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_PERIOD_SECONDS,
    show_default=True,
    help="Seconds between decisions (Kubernetes: 15).",
)
@click.option(
    "--scale-down-window",
    type=click.FloatRange(min=0),
    default=LOCAL_SCALE_DOWN_WINDOW_SECONDS,
    show_default=True,
    help="Scale-down stabilization window in seconds (Kubernetes: 300).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="No change while |average/target - 1| <= tolerance.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    default=None,
    help="Take each replica's pps from this Prometheus server (the prometheus-adapter query) instead of "
    "reading the data plane's counters, e.g. http://127.0.0.1:9090.",
)
@click.option(
    "--rate-window",
    default="1m",
    show_default=True,
    help="With --prometheus: the range of rate() (prometheus-adapter's rule uses 1m; keep it at least "
    "4 scrape intervals).",
)
@click.option(
    "--state-dir",
    envvar=ENV_STATE_DIR,
    default=None,
    help="State directory of the local runtime (default: the one `flexsfc up` uses).",
)
def autoscale(
    nf: str,
    target_pps: float,
    min_replicas: int,
    max_replicas: int,
    period: float,
    scale_down_window: float,
    tolerance: float,
    duration: float | None,
    prometheus_url: str | None,
    rate_window: str,
    state_dir: str | None,
) -> None:
    """Scale NF on the packets per second its replicas receive (Kubernetes HPA algorithm).

    NF is a network function or Deployment name of the runtime started by `flexsfc up`.

    desired = ceil(replicas x average pps per replica / target-pps), no change within the tolerance,
    scale-down follows the highest recommendation of the last window, terminating (draining)
    replicas are not counted.

    The pps of a replica is, by default, the rate of its rx packet counter (flexsfc_nf_rx_packets_total)
    over the last period, read from the data plane; with --prometheus URL it is what prometheus-adapter
    serves to an HPA, the rule's query in essence sum by (pod) (rate(flexsfc_nf_rx_packets_total{..}[1m])),
    queried from that server (which must scrape the runtime: `flexsfc up --metrics-port`).
    """
    from flexsfc.autoscale.prometheus import PrometheusError, PrometheusPodRates
    from flexsfc.local.control import SupervisorError, request

    if max_replicas < min_replicas:
        raise click.BadParameter(
            f"--max ({max_replicas}) must be >= --min ({min_replicas})", param_hint="--max"
        )
    pod_rates = None
    if prometheus_url is not None:
        try:
            pod_rates = PrometheusPodRates.at(prometheus_url, window=rate_window)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate-window") from exc

    config = RuntimeConfig.for_dir(state_dir)
    try:
        target = StatusTarget(
            nf,
            lambda: request(config, "status", timeout=30),
            lambda name, replicas: request(config, "scale", name=name, replicas=replicas),
        )
    except (SupervisorError, TargetNotFound) as exc:
        raise click.ClickException(str(exc)) from exc

    spec = local_spec(
        target_pps, min_replicas, max_replicas, scale_down_window=scale_down_window, tolerance=tolerance
    )

    def show(tick: Tick) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {target.name}: {format_tick(tick, target_pps)}")

    scaler = LocalAutoscaler(target, spec, period=period, on_tick=show, pod_rates=pod_rates)
    source = "data plane counters"
    if prometheus_url is not None:
        source = f"{prometheus_url} (rate over {rate_window})"
    click.echo(
        f"autoscaling {target.name}: target {target_pps:.0f} pps per replica, {min_replicas}..{max_replicas} "
        f"replicas, every {period:g}s, scale-down window {scale_down_window:g}s, pps from {source} "
        "(Ctrl-C stops)",
        err=True,
    )
    deadline = None if duration is None else time.monotonic() + duration
    next_at = time.monotonic()
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                scaler.step()
            except SupervisorError as exc:
                raise click.ClickException(f"local runtime: {exc}") from exc
            except PrometheusError as exc:
                # Like the HPA when the metrics API fails (FailedGetPodsMetric): keep the size, retry.
                stamp = time.strftime("%H:%M:%S")
                click.echo(f"{stamp} {target.name}: no decision, prometheus: {exc}", err=True)
            next_at = next_tick(next_at, period)
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        pass
