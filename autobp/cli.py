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


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory made by `autobp train`.")],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="A CSV file with the training feature columns "
                                         "(by name), or an .npz with X (and optionally y).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the predictions to this CSV file "
                                                "instead of standard output.")] = None,
) -> None:
    """Predict with a trained run on new examples.

    Writes one CSV row per example: the predicted class and one probability per class `p_<class>`
    (classification), or one column per target in the data's units (regression). If the file also has the
    target column(s), prints the loss and accuracy or R² (to standard error when the predictions go to
    standard output).
    """
    from autobp.predict import load_model, predict_file, write_predictions

    prediction = predict_file(load_model(run_dir), data)
    if out is None:
        typer.echo(prediction.csv, nl=False)
    else:
        write_predictions(out, prediction.csv)
        typer.echo(f"wrote {prediction.rows} predictions to {out}")
    if prediction.metrics is not None:
        typer.echo(prediction.format_metrics(), err=out is None)


@app.command()
def gradcheck(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The YAML config file.")],
    overrides: SetOption = None,
) -> None:
    """Check backpropagation on your network against central differences and forward mode.

    Builds the config's network in float64, takes a batch of its training data and compares the reverse-mode
    gradient of the loss for every parameter with central differences and with forward mode (JVPs along
    random directions), printing the largest relative error per layer. Then times the whole gradient by
    forward mode (one pass per parameter) against reverse mode (one pass). Exit code 0 when every error is
    below 1e-6, 1 otherwise, 2 for a bad config or data.
    """
    from autobp.errors import EXIT_FAILED, EXIT_OK
    from autobp.gradcheck import check_config

    report = check_config(config, overrides or ())
    typer.echo(report.format())
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def main() -> None:
    """Entry point of the `autobp` command."""
    app()
