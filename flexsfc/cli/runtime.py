"""Local runtime commands, what they share: consoles, options, errors, the runtime's config, the
wait for readiness. The commands: runtime_up (up, down), runtime_status (status), runtime_pods
(scale, exec, logs).

Deployments and pods are namespaced: `-n/--namespace` picks one where a name runs in several
namespaces. A command that finds the runtime's supervisor dead starts a new one that adopts the
runtime (flexsfc.local.control.supervisor_for).
"""

import os
import time
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from flexsfc.local.config import ENV_STATE_DIR, ConfigError, RuntimeConfig

if TYPE_CHECKING:
    pass


console = Console()
err_console = Console(stderr=True)

state_dir_option = click.option(
    "--state-dir",
    envvar=ENV_STATE_DIR,
    default=None,
    help="Runtime state directory (default /run/flexsfc/local; env FLEXSFC_LOCAL_DIR).",
)


namespace_option = click.option(
    "-n",
    "--namespace",
    default=None,
    help="Namespace of the Deployment or pod, where the name runs in several.",
)


def _fail(message: str) -> "click.exceptions.Exit":
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return click.exceptions.Exit(1)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise _fail("the local runtime needs root (network namespaces, eBPF); run with sudo")


def _wait_ready(config: RuntimeConfig, timeout: float, quiet: bool) -> None:
    from flexsfc.local import control

    deadline = time.monotonic() + timeout
    with console.status("starting pods...", spinner="dots") as spinner:
        while True:
            info = control.ready(config)
            if info.error:
                raise control.SupervisorError(info.error)
            text = ", ".join(f"{d.name} {d.running}/{d.desired}" for d in info.deployments)
            if not quiet:
                spinner.update(f"pods running: {text}")
            if info.ready:
                return
            if time.monotonic() > deadline:
                raise control.SupervisorError(f"not ready after {timeout:.0f}s: {text}")
            time.sleep(0.1)


def _config(
    state_dir: str | None, pin_dir: str | None = None, prefix: str | None = None, nodes: int | None = None
) -> RuntimeConfig:
    try:
        return RuntimeConfig.for_dir(state_dir).with_options(pin_dir, prefix, nodes)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _say_adopted(config: RuntimeConfig, how: str) -> None:
    if how == "adopted":
        err_console.print(
            f"[yellow]the supervisor of {escape(config.state_dir)} had died: a new one adopted its pods "
            "and data plane[/]"
        )
