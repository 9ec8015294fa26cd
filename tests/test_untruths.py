"""Small untruths (issue 27): what the end-of-run lines count, when they say weights were restored, one number style
per output, and the README's description of its own examples."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import CONFIGS, ROOT
from typer.testing import CliRunner

from autobp.cli import app
from autobp.rundir.status import Status
from autobp.rundir.summary import Summary
from autobp.config.configfile import load_config
from autobp.training.ending import RunResult, format_summary
from autobp.training.entry import train


def test_an_interrupted_run_counts_finished_epochs_and_the_batches_of_the_cut_one() -> None:
    """Ctrl-C one batch into epoch 724 of a run with 10 batches an epoch: 723 epochs were finished, not 724."""
    summary = Summary(status=Status.INTERRUPTED, name="long", epochs=724, epochs_completed=723, steps=7231,
                      seconds=12.5, steps_per_second=8841.3, final={"epoch": 723, "step": 7230})  # fmt: skip
    first = format_summary(RunResult(Path("runs/long"), Status.INTERRUPTED, summary)).splitlines()[0]
    assert first == "long: interrupted after 723 epochs and 1 batch, 7,231 steps in 12.50 s (8,841 steps/s)"


def test_a_run_whose_last_epoch_was_its_best_does_not_say_weights_were_restored(tmp_path: Path) -> None:
    """iris.yaml has early stopping; cut to 60 epochs, its validation loss is still falling, so nothing is put back."""
    result = train(CONFIGS / "iris.yaml", ["training.epochs=60", f"output.dir={tmp_path}"])
    stop = result.summary.early_stopping
    assert result.status == "completed" and stop.best_epoch == 60 and stop.restored is False
    text = format_summary(result)
    assert "restored" not in text and "model.npz holds" not in text
    assert "  val_loss         final " in text


def test_predict_counts_with_the_same_digit_grouping_as_everything_else(tmp_path: Path) -> None:
    run = train(CONFIGS / "xor.yaml", ["training.epochs=1", f"output.dir={tmp_path}"]).run_dir
    rows = 1200
    lines = ["x0,x1,y", *(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(rows))]
    (tmp_path / "many.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "many.csv"), "--out",
                                      str(tmp_path / "p.csv")])  # fmt: skip
    assert result.exit_code == 0, result.output
    wrote, metrics = result.stdout.splitlines()
    assert wrote == f"wrote 1,200 predictions to {tmp_path / 'p.csv'}" and metrics.startswith("metrics on 1,200 rows: ")


def test_the_readme_describes_deep_sigmoid_as_it_is() -> None:
    layers = load_config(CONFIGS / "deep_sigmoid.yaml").model.layers
    sigmoid = sum(layer.activation == "sigmoid" for layer in layers)
    assert (sigmoid, layers[-1].activation, len(layers)) == (8, "identity", 9)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`configs/deep_sigmoid.yaml` (eight sigmoid layers and an identity output layer)" in readme
    assert "| `deep_sigmoid.yaml` | eight sigmoid layers and an identity output layer:" in readme
    assert not re.search(r"nine sigmoid", readme)
