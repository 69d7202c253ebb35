"""The `flexsfc` command line. Subcommands live in their own modules and load lazily."""

import importlib

import click

# command name -> "module:attribute" of a click.Command. Each component registers its commands here.
COMMANDS: dict[str, str] = {
    "validate": "flexsfc.cli.validate:validate",
    "up": "flexsfc.cli.runtime_up:up",
    "down": "flexsfc.cli.runtime_up:down",
    "scale": "flexsfc.cli.runtime_pods:scale",
    "status": "flexsfc.cli.runtime_status:status",
    "exec": "flexsfc.cli.runtime_pods:exec_",
    "logs": "flexsfc.cli.runtime_pods:logs",
    "node": "flexsfc.cli.runtime_nodes:node",
    "demo": "flexsfc.cli.demo:demo",
    "autoscale": "flexsfc.cli.autoscale:autoscale",
    "bench": "flexsfc.cli.bench:bench",
    "manifests": "flexsfc.cli.manifests:manifests",
    "operator": "flexsfc.cli.operator:operator",
    "agent": "flexsfc.cli.agent:agent",
    "agent-health": "flexsfc.cli.health:agent_health",
    "flows": "flexsfc.cli.flows:flows",
    "sessions": "flexsfc.cli.sessions:sessions",
}

# Optional dependencies (pyproject.toml's extras): top-level module -> the extra that installs it. A
# subcommand that needs one that is missing fails with a message naming the extra, not a traceback.
EXTRAS: dict[str, str] = {
    "kopf": "kube",
    "kubernetes": "kube",
    "matplotlib": "bench",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides the module `exc` did not find, if it is one of ours."""
    return EXTRAS.get((exc.name or "").split(".")[0])


def _extra_error(command: str, exc: ModuleNotFoundError) -> click.ClickException:
    extra = missing_extra(exc)
    return click.ClickException(
        f"`flexsfc {command}` needs {exc.name}, which is not installed: "
        f"pip install 'flexsfc[{extra}]' (or install flexsfc with its extras: 'flexsfc[{extra},...]')"
    )


def _unavailable(command: str, exc: ModuleNotFoundError) -> click.Command:
    """Stands in for a subcommand whose extra is missing: listed, and running it says what to install."""
    error = _extra_error(command, exc)

    def fail() -> None:
        raise error

    return click.Command(
        command,
        callback=fail,
        help=f"(needs the {missing_extra(exc)!r} extra: pip install 'flexsfc[{missing_extra(exc)}]')",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._listable(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        try:
            return self._load(cmd_name)
        except ModuleNotFoundError as exc:
            if missing_extra(exc) is None:
                raise
            return _unavailable(cmd_name, exc)

    def invoke(self, ctx: click.Context) -> object:
        # Subcommands import their heavy dependencies when they run: name the extra there too.
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            if missing_extra(exc) is None:
                raise
            raise _extra_error(ctx.invoked_subcommand or "this command", exc) from None

    def _listable(self, name: str) -> bool:
        try:
            return self._load(name) is not None
        except ModuleNotFoundError as exc:
            return missing_extra(exc) is not None  # listed; running it names the extra

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # component not built yet
                return None
            raise
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flexsfc")
def main() -> None:
    """flexsfc: scalable Service Function Chains with flexible eBPF cross-connections."""
