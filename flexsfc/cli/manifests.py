"""`flexsfc manifests`: print (or write) the Kubernetes deployment set generated from the code."""

from pathlib import Path

import click

from flexsfc.operator import deployset


@click.command()
@click.option("--crds", "crds_only", is_flag=True, help="Only the CustomResourceDefinitions.")
@click.option(
    "--write",
    "write_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per component into this directory (deploy/) instead of printing.",
)
def manifests(crds_only: bool, write_dir: Path | None) -> None:
    """Print the CRDs, RBAC, controller Deployment and agent DaemonSet as YAML for kubectl apply."""
    files = deployset.crd_files() if crds_only else deployset.deployment_files()
    if write_dir is None:
        click.echo(deployset.render_all(files), nl=False)
        return
    for manifest in files:
        target = write_dir / manifest.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(manifest.render(), encoding="utf-8")
        click.echo(f"wrote {target}")
