"""The `autobp` command line: a thin layer over the config, data and training modules.

Heavy modules (numpy, pydantic) are imported inside the commands so that `autobp --help` answers at once.
"""

from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import click
import typer
from typer.core import TyperCommand, TyperGroup

from autobp.common.errors import EXIT_FAILED, EXIT_INTERRUPTED, AutobpError
from autobp.common.runtime import skip_final_collections
from autobp.rundir.status import Status
from autobp.sweeps import EXECUTORS
from autobp.tools import formats


def _say(text: str, *, err: bool = False, nl: bool = True) -> None:
    """Print for a person: the one way out of the CLI, so no control character from data reaches a terminal."""
    from autobp.common.text import terminal_safe

    typer.echo(terminal_safe(text), err=err, nl=nl)


class _Group(TyperGroup):
    """Reports an AutobpError as `error: <message>` with its exit code, never as a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutobpError as err:
            _say(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except OSError as err:  # the machine, not the input: a full disk, a file-size limit, a vanished folder
            where = f"{err.filename}: " if err.filename else ""
            _say(f"error: {where}{err.strerror or err}", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where a command maps it (what it wrote is cleaned up)
            _say(str(Status.INTERRUPTED), err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


class _Command(TyperCommand):
    """Usage lines in the usual notation: `CONFIG` for a required argument, `[DIR]` for an optional one."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_usage_name(param))
        return pieces


def _usage_name(argument: click.Parameter) -> str:
    name = argument.metavar or argument.name.upper()
    if argument.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if argument.required else f"[{name}]"


class _App(typer.Typer):
    """Every command gets the plain usage line of `_Command`.

    Path parameters say `readable=False`: autobp opens its files itself, so an unreadable one is the usual
    `error: PATH: cannot read the file: Permission denied` (exit 2), not click's usage error."""

    def command(self, *args: Any, cls: type[TyperCommand] = _Command, **kwargs: Any) -> Callable[..., Any]:
        return super().command(*args, cls=cls, **kwargs)


app = _App(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: importing rich would double the start-up time
    help="Train neural networks described by a YAML config, on autobp's own autodiff engine.",
)

def _print_version(value: bool) -> None:
    if value:
        from autobp import __version__

        _say(f"autobp {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print autobp's version and exit.")] = False,
) -> None:
    """Train neural networks described by a YAML config, on autobp's own autodiff engine."""


SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY.PATH=VALUE", help="Override a config value, e.g. --set optimizer.lr=1e-3 "
                 "(repeatable; the value is read as YAML)."),
]

OutputDirOption = Annotated[
    Optional[Path],
    typer.Option("--output-dir", readable=False, metavar="DIR", help="Folder receiving the run directory (overrides output.dir)."),
]
RenamedOutputOption = Annotated[Optional[Path], typer.Option("--output", readable=False, hidden=True)]


def _refuse_renamed_output(given: Path | None) -> None:
    """`--output DIR` named the parent folder before -o/--output came to mean a command's own output everywhere."""
    if given is not None:
        from autobp.common.errors import ConfigError

        raise ConfigError(f"--output is now --output-dir (the folder receiving the directories it writes): "
                          f"--output-dir {given}")  # fmt: skip


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(readable=False, metavar="CONFIG", help="The YAML config file.")],
    overrides: SetOption = None,
) -> None:
    """Check a config and its data, and print it resolved.

    Prints the config with every default filled in and the output size inferred from the data, then what it
    found as YAML comments (rows, features, classes or targets, the split, the parameter count, ok), or every
    problem found (exit code 2).
    """
    from autobp.model.prepare import findings, prepare
    from autobp.config.configfile import dump_config

    resolved, dataset = prepare(config, overrides or ())
    _say(dump_config(resolved), nl=False)
    _say("\n".join(findings(resolved, dataset)))


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(readable=False, metavar="CONFIG", help="The YAML config file.", show_default=False)] = None,
    overrides: SetOption = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name prefix (overrides `name`).")] = None,
    output_dir: OutputDirOption = None,
    renamed: RenamedOutputOption = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", readable=False, metavar="RUN_DIR", help="Continue this run from its last checkpoint (or extend it with --set training.epochs=N).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the network a config describes and write a run directory.

    Exit codes: 0 completed or stopped early, 1 failed, 2 bad config or data, 3 diverged, 130 interrupted.
    """
    from autobp.common.errors import ConfigError
    from autobp.training.ending import format_summary
    from autobp.training.entry import resume as resume_run
    from autobp.training.entry import train as run

    _refuse_renamed_output(renamed)
    if resume is not None:
        if config is not None or name is not None or output_dir is not None:
            raise ConfigError("--resume RUN_DIR continues a run in place: give no CONFIG, --name or --output-dir "
                              "with it")  # fmt: skip
        result = resume_run(resume, overrides or (), quiet=quiet, announce=lambda text: _say(text, err=True))
    elif config is None:
        raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR")
    else:
        result = run(config, overrides or (), name=name, output=output_dir, quiet=quiet)
    if result.nothing_to_do:
        _say(f"{result.run_dir}: already {result.status}; nothing to do "
                   "(extend it with --set training.epochs=N or --set training.max_steps=N)")  # fmt: skip
        raise typer.Exit(0)
    _say(format_summary(result))
    raise typer.Exit(result.exit_code)


JobsOption = Annotated[
    Optional[int],
    typer.Option("--jobs", "-j", min=1, help="Trials run at once, each in its own process. [default: number of cores]",
                 show_default=False),
]
ExecutorOption = Annotated[
    Literal[EXECUTORS],
    typer.Option("--executor", help="Where trials run: local worker processes, or a Dask cluster (pip install 'autobp[dask]')."),
]
SchedulerOption = Annotated[
    Optional[str],
    typer.Option("--scheduler", metavar="ADDRESS", help="The Dask scheduler, e.g. tcp://host:8786 (with --executor "
                 "dask; default: a local cluster, one worker per core)."),
]


@app.command()
def sweep(
    sources: Annotated[Optional[list[Path]], typer.Argument(readable=False, metavar="SWEEP_OR_CONFIG", help="A sweep file "
                       "(a base config and the values to try), or config files to compare.", show_default=False)] = None,
    overrides: SetOption = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Sweep name prefix (overrides the sweep file's `name`).")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", readable=False, metavar="DIR", help="Folder whose sweeps/ "
                          "subfolder receives the sweep (overrides output.dir).")] = None,
    renamed: RenamedOutputOption = None,
    jobs: JobsOption = None,
    max_failures: Annotated[Optional[int], typer.Option("--max-failures", min=1, help="Stop launching trials once this many have failed or diverged. [default: run every trial]", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", readable=False, metavar="SWEEP_DIR", help="Run the trials of this sweep that did not complete (or whose config changed), in place.")] = None,
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run many trials in parallel and rank them: the values of a sweep file, or several configs.

    Every trial is validated before the first starts; each is an ordinary run in the sweep directory
    <output>/sweeps/<name>-<time>/, beside sweep.yaml and trials.csv. Exit codes: 0 every trial completed, stopped
    early or was pruned (early_terminate), 2 bad sweep file, config or data, 4 some trials did not complete, 130
    interrupted (resume with --resume).
    """
    from autobp.common.errors import ConfigError
    from autobp.sweeps.run import resume_sweep, run_sweep
    from autobp.sweeps.table import format_ranking

    _refuse_renamed_output(renamed)
    if resume is not None and (sources or overrides or name is not None or output_dir is not None):
        raise ConfigError("--resume SWEEP_DIR continues a sweep as it was started: give no files, --set, "
                          "--name or --output-dir with it")  # fmt: skip
    with _executor(executor, scheduler, jobs) as pool:
        options = {"jobs": jobs or (pool.slots if pool else None), "max_failures": max_failures, "quiet": quiet,
                   "executor": pool}  # fmt: skip
        if resume is not None:
            result = resume_sweep(resume, **options)
        else:
            result = run_sweep(sources or [], overrides or (), name=name, output=output_dir, **options)
    _say(format_ranking(result))
    for note in result.sweep.notes:
        _say(f"note: {note}", err=True)
    raise typer.Exit(result.exit_code)


@app.command()
def doctor(
    run_dir: Annotated[Path, typer.Argument(readable=False, metavar="RUN_DIR", help="A run directory made by `autobp train`.")],
    jobs: JobsOption = None,
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="training.epochs of each trial. [default: the run's]", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Verify the run's diagnosis: retrain it with the suggested fix and each alternative, and say which cured it.

    The trials are a sweep in RUN_DIR/doctor/; the verdict, with the metric before and after each change and the
    `autobp train` command reproducing the best cure, is RUN_DIR/doctor.json (shown by `report`). Running it again
    resumes. Exit codes: 0 done (also when the run has no diagnosis), 2 bad or damaged run directory, 130
    interrupted.
    """
    from autobp.tools.doctor import format_doctor, run_doctor

    with _executor(executor, scheduler, jobs) as pool:
        result = run_doctor(run_dir, epochs=epochs, jobs=jobs or (pool.slots if pool else None), quiet=quiet,
                            executor=pool)  # fmt: skip
    _say(format_doctor(result))
    for note in result.notes:
        _say(f"note: {note}", err=True)
    raise typer.Exit(result.exit_code)


def _executor(executor: str, scheduler: str | None, jobs: int | None) -> Any:
    """The Dask executor `--executor dask` asks for (a context manager), or an empty context for local processes."""
    from contextlib import nullcontext

    from autobp.common.errors import ConfigError

    if scheduler is not None and executor != "dask":
        raise ConfigError("--scheduler goes with --executor dask")
    if executor != "dask":
        return nullcontext()
    from autobp.sweeps.cluster import DaskExecutor

    return DaskExecutor(scheduler, workers=jobs)


@app.command()
def schema() -> None:
    """Print the JSON Schema of config files.

    Editors use it to complete and check keys as you type: see the `# yaml-language-server: $schema=...` line
    at the top of the example configs.
    """
    import json

    from autobp.config.schema import config_json_schema

    _say(json.dumps(config_json_schema(), indent=2))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(readable=False, metavar="RUN_DIR", help="A run directory made by `autobp train`.")],
    data: Annotated[Path, typer.Argument(readable=False, metavar="DATA", help="A CSV file with the training feature columns "
                                         "(by name), an .npz with X (and optionally y), or an .npy of "
                                         "features (memory-mapped).")],
    out: Annotated[Optional[Path], typer.Option("-o", "--output", "--out", readable=False, metavar="FILE", help="Write the "
                                                "predictions to this CSV file instead of standard output.")] = None,
) -> None:
    """Predict with a trained run on new examples.

    Writes one CSV row per example: the predicted class and one probability per class `p_<class>`
    (classification), or one column per target in the data's units (regression). If the file also has the
    target column(s), prints the loss and accuracy or R² (to standard error when the predictions go to
    standard output).
    """
    from autobp.common.files import output_path
    from autobp.tools.predict import load_model, predict_file, write_predictions

    if out is not None:
        output_path(out, "-o")  # refused before the work, not after
    prediction = predict_file(load_model(run_dir), data)
    if out is None:
        _say(prediction.csv, nl=False)
    else:
        write_predictions(out, prediction.csv)
        _say(f"wrote {prediction.rows:,} predictions to {out}")
    if prediction.metrics is not None:
        _say(prediction.format_metrics(), err=out is None)


@app.command()
def gradcheck(
    config: Annotated[Path, typer.Argument(readable=False, metavar="CONFIG", help="The YAML config file.")],
    overrides: SetOption = None,
    order: Annotated[int, typer.Option("--order", min=1, max=2, help="1: gradients; 2: Hessian-vector products "
                                       "(forward over reverse) against central differences of gradients.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on standard error.")] = False,
) -> None:
    """Check backpropagation on your network against central differences and forward mode.

    Builds the config's network in float64, takes a batch of its training data and compares the reverse-mode
    gradient of the loss for every parameter with central differences and with forward mode (JVPs along
    random directions), printing the largest relative error per layer. Then times the whole gradient by
    forward mode (one pass per parameter) against reverse mode (one pass). With --order 2, compares
    Hessian-vector products (forward over reverse) with central differences of gradients along random
    directions instead, and times one against two gradients. Exit code 0 when every error is below 1e-6,
    1 otherwise, 2 for a bad config or data.
    """
    from autobp.common.errors import EXIT_FAILED, EXIT_OK
    from autobp.tools.gradcheck import check_config, check_curvature

    report = (check_config if order == 1 else check_curvature)(config, overrides or (), quiet=quiet)
    _say(report.format())
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


FormatOption = Annotated[
    Literal[formats.DOCUMENT],
    typer.Option("--format", help="text for a terminal, markdown for notes and issues, json (stable keys) for scripts."),
]


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(readable=False, metavar="RUN_DIR", help="A run directory made by `autobp train` "
                                            "(or, with --format html, a sweep directory).")],
    fmt: Annotated[Literal[formats.REPORT], typer.Option("--format", help="text for a terminal, markdown for notes "
                   "and issues, json (stable keys) for scripts, html for a self-contained interactive page written to "
                   "RUN_DIR/report.html or -o FILE (needs pip install 'autobp[report]').")] = "text",
    plot: Annotated[Optional[Path], typer.Option("--plot", readable=False, metavar="FILE.png", help="Also draw the gradient-flow "
                                                 "figure (.png, .svg or .pdf; needs pip install 'autobp[plot]').")] = None,
    html: Annotated[bool, typer.Option("--html", help="The same as --format html.")] = False,
    out: Annotated[Optional[Path], typer.Option("-o", "--output", readable=False, metavar="FILE", help="With --format html: where to "
                                                "write the page.")] = None,
) -> None:
    """Report on a run: its loss curves, a per-layer gradient table and diagnoses.

    Diagnoses (vanishing or exploding gradients, dead or saturated units, a learning rate off, overfitting)
    come with their evidence and a suggestion naming config keys. Reads only the run directory's files, so it
    also works on runs that diverged, were interrupted or are still going.
    """
    from autobp.common.errors import ConfigError
    from autobp.rundir.reader import read_run
    from autobp.tools.report import build_report, render

    if html and fmt not in ("text", "html"):
        raise ConfigError(f"--html is --format html: give one of --html and --format {fmt}")
    html = html or fmt == "html"
    if out is not None and not html:
        raise ConfigError(f"-o FILE is where --format html writes its page; --format {fmt} writes to standard output")
    if html:
        from autobp.tools.html_report import write_report

        _say(f"wrote the HTML report to {write_report(run_dir, out)}")
        return
    if plot is not None:
        from autobp.tools.plot import check_plot_target

        check_plot_target(plot)
    log = read_run(run_dir)
    _say(render(build_report(log), fmt))
    if plot is not None:
        from autobp.tools.plot import plot_run

        plot_run(log, plot)
        _say(f"wrote the gradient-flow figure to {plot}", err=True)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(readable=False, metavar="RUN_OR_SWEEP...", help="Run directories, or sweep "
                                               "directories (each stands for all its trials).")],
    sort: Annotated[Optional[str], typer.Option("--sort", metavar="COLUMN", help="Sort by a metric (val_loss, "
                    "best_val_accuracy, …), signal_ratio, epochs or a differing config key; losses ascending, "
                    "accuracy and R² descending. Default: val_loss (train_loss without a validation split).")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", metavar="A,B,...", help="The columns to show after "
                       "the run, comma-separated: status, epochs, signal_ratio, diagnoses, any metric (best_val_loss, "
                       "train_accuracy, …) or config key (model.hidden, optimizer.name, …). Default: status and epochs "
                       "(unless the same in every run), the differing config keys, the validation metrics, "
                       "signal_ratio, diagnoses.")] = None,
    fmt: FormatOption = "text",
) -> None:
    """Compare runs side by side: the config values that differ, final metrics, gradient summaries.

    Layers are shown as model.hidden (and model.activation, model.init where the layers agree). The signal_ratio
    column is the median ‖∂L/∂f‖ of the first layer over that of the output layer: far below 1, gradients vanish
    on their way back; far above 1, they explode. A text table wider than the terminal continues below.
    """
    import shutil
    import sys

    from autobp.tools.compare import TABLE_WIDTH, compare_runs, render_comparison

    chosen = None if columns is None else [c.strip() for c in columns.split(",") if c.strip()]
    comparison = compare_runs(runs, sort, chosen)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else TABLE_WIDTH
    _say(render_comparison(comparison, fmt, width))
    for note in comparison.notes:
        _say(f"note: {note}", err=True)


@app.command()
def runs(
    directory: Annotated[Path, typer.Argument(readable=False, metavar="DIR", help="The folder to look in (output.dir).")] = Path("runs"),
    fmt: FormatOption = "text",
) -> None:
    """List the run and sweep directories in DIR (default: runs), newest first.

    Shows each one's status, date, epochs and best metric; a sweep's status counts its trials. Folders that
    cannot be read are skipped with a note.
    """
    from autobp.tools.compare import list_runs, render_listing

    listed, notes = list_runs(directory)
    _say(render_listing(listed, fmt))
    for note in notes:
        _say(f"note: {note}", err=True)


@app.command()
def view(
    directory: Annotated[Path, typer.Argument(readable=False, metavar="DIR", help="The folder to show (output.dir).")] = Path("runs"),
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The port to listen on (0: any free one).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="The address to listen on; anything but 127.0.0.1 or "
                                      "localhost lets other machines read your runs.")] = "127.0.0.1",
) -> None:
    """Show the runs and sweeps in DIR in the browser, live: a local, read-only web server.

    Lists them as `autobp runs` does and shows each as its HTML report, updated as it trains (needs pip install
    'autobp[report]'). Prints its address; Ctrl-C stops it.
    """
    from autobp.tools.view import serve

    serve(directory, host, port, lambda text, err: _say(text, err=err))


@app.command()
def export(
    source: Annotated[Path, typer.Argument(readable=False, metavar="RUN_OR_SWEEP", help="A run directory (onnx, tensorboard) or "
                                           "a sweep directory (tensorboard).")],
    fmt: Annotated[Literal[formats.EXPORT], typer.Option("--format", help="onnx: the trained model; tensorboard: "
                                                         "the logs as event files.")],
    out: Annotated[Optional[Path], typer.Option("-o", "--output", "--out", readable=False, metavar="PATH", help="The ONNX file [default: "
                   "RUN/model.onnx] or the TensorBoard log directory [default: RUN_OR_SWEEP/tensorboard].",
                   show_default=False)] = None,
) -> None:
    """Export a run for use elsewhere: its model as ONNX, or its logs (a sweep's trials) for TensorBoard.

    Both need pip install 'autobp[export]'. Exit codes: 0 written, 2 bad input or the extra missing.
    """
    if fmt == "onnx":
        from autobp.tools.onnx_export import export_onnx

        _say(f"wrote {export_onnx(source, out)}")
        return
    from autobp.tools.tensorboard_export import export_tensorboard

    written = export_tensorboard(source, out)
    runs = "1 run" if len(written.runs) == 1 else f"{len(written.runs)} runs"
    _say(f"wrote {runs}, {written.scalars:,} scalars to {written.directory}; "
               f"view them with: tensorboard --logdir {written.directory}")  # fmt: skip


@app.command()
def graph(
    source: Annotated[Path, typer.Argument(readable=False, metavar="CONFIG_OR_RUN", help="A config file (initial weights) or a run "
                                           "directory (trained weights).")],
    example: Annotated[int, typer.Option("--example", metavar="I", help="Which example of the validation split "
                                         "(the training split without one).")] = 0,
    fmt: Annotated[Optional[Literal[formats.GRAPH]], typer.Option("--format", help="Output format. [default: from "
                   "-o's suffix, else svg]", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--output", readable=False, metavar="FILE", help="Write here instead of "
                                                "standard output.")] = None,
) -> None:
    """Draw the network's computation graph for one example, from the engine's recorded graph.

    Every operation the engine ran (dense layers, activations, the loss), with its forward value and its adjoint
    ∂L/∂· from the reverse pass, and every edge with the local derivative it contributes (σ'(z), Wᵀ, …). SVG is
    laid out by autobp itself (no Graphviz needed); DOT is for Graphviz; HTML wraps the SVG in a page.
    """
    from autobp.common.files import output_path
    from autobp.tools.graph import build_graph, output_format, render_graph, write_graph

    if out is not None:
        output_path(out, "-o")  # refused before the work, not after
    text = render_graph(build_graph(source, example), output_format(fmt, out))
    if out is None:
        _say(text, nl=False)
        return
    write_graph(text, out)
    _say(f"wrote the computation graph to {out}", err=True)


def main() -> None:
    """Entry point of the `autobp` command."""
    try:
        app()
    finally:  # the command is over: what remains is the interpreter's exit
        skip_final_collections()
