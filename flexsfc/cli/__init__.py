"""The `flexsfc` command line. Subcommands live in their own modules and load lazily."""

import importlib

import click

# command name -> "module:attribute" of a click.Command. Each component registers its commands here.
COMMANDS: dict[str, str] = {
    "validate": "flexsfc.cli.validate:validate",
    "up": "flexsfc.cli.runtime:up",
    "down": "flexsfc.cli.runtime:down",
    "scale": "flexsfc.cli.runtime:scale",
    "status": "flexsfc.cli.runtime:status",
    "exec": "flexsfc.cli.runtime:exec_",
    "logs": "flexsfc.cli.runtime:logs",
    "demo": "flexsfc.cli.demo:demo",
    "autoscale": "flexsfc.cli.autoscale:autoscale",
    "bench": "flexsfc.cli.bench:bench",
    "manifests": "flexsfc.cli.manifests:manifests",
    "operator": "flexsfc.cli.operator:operator",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

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
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flexsfc")
def main() -> None:
    """flexsfc: scalable Service Function Chains with flexible eBPF cross-connections."""
