"""The `autobp` command line: a thin layer over the config, data and training modules.

Heavy modules (numpy, pydantic) are imported inside the commands so that `autobp --help` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from autobp.errors import AutobpError


class _Group(TyperGroup):
    """Reports an AutobpError as `error: <message>` with its exit code, never as a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutobpError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: importing rich would double the start-up time
    help="Train neural networks described by a YAML config, on autobp's own autodiff engine.",
)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY.PATH=VALUE", help="Override a config value, e.g. --set optimizer.lr=1e-3 "
                 "(repeatable; the value is read as YAML)."),
]


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The YAML config file.")],
    overrides: SetOption = None,
) -> None:
    """Check a config and its data, and print it resolved.

    Prints the config with every default filled in and the output size inferred from the data, or every
    problem found (exit code 2).
    """
    from autobp.configfile import dump_config, load_config
    from autobp.data import load_dataset, resolve_config

    loaded = load_config(config, overrides or ())
    typer.echo(dump_config(resolve_config(loaded, load_dataset(loaded))), nl=False)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The YAML config file.")],
    overrides: SetOption = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name prefix (overrides `name`).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Folder for run directories (overrides output.dir).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the network a config describes and write a run directory.

    Exit codes: 0 completed or stopped early, 1 failed, 2 bad config or data, 3 diverged, 130 interrupted.
    """
    from autobp.runner import format_summary
    from autobp.runner import train as run

    result = run(config, overrides or (), name=name, output=output, quiet=quiet)
    typer.echo(format_summary(result))
    raise typer.Exit(result.exit_code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of config files.

    Editors use it to complete and check keys as you type: see the `# yaml-language-server: $schema=...` line
    at the top of the example configs.
    """
    import json

    from autobp.configfile import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))


def main() -> None:
    """Entry point of the `autobp` command."""
    app()
