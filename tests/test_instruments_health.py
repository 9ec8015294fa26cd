"""The instruments' verdicts and what they feed into the one judgement: `gradient_noise`, and the step quality α and
lr·λ_max as learning-rate evidence — on real runs and on hand-made logs that isolate each rule."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from autobp.cli import app
from autobp.health import judge
from autobp.health.thresholds import ALPHA_HIGH, ALPHA_LOW, NOISE_SCALE_FACTOR, STABILITY_LIMIT
from autobp.rundir.instruments import TOTAL, VALUES, BlockLog, InstrumentLog
from autobp.rundir.reader import LayerLog, RunLog, read_run
from autobp.rundir.summary import read_summary
from autobp.config.configfile import config_from_dict
from autobp.training.entry import train


def spirals(tmp_path: Path, batch: int, **optimizer) -> dict:
    return {
        "name": f"b{batch}", "seed": 1, "data": {"source": "spirals", "n_samples": 300},
        "model": {"hidden": [16, 16]}, "loss": "cross_entropy",
        "optimizer": {"name": "sgd", "lr": 0.05, **optimizer},
        "training": {"epochs": 4, "batch_size": batch, "instruments": {"every": "auto"}},
        "output": {"dir": str(tmp_path / "runs")},
    }  # fmt: skip


def test_a_batch_far_below_the_noise_scale_is_gradient_noise_and_a_big_batch_is_not(tmp_path: Path) -> None:
    small = train(spirals(tmp_path, 4))
    noise = next(d for d in small.summary.health.diagnoses if d.kind == "gradient_noise")
    assert noise.evidence["batch_size"] == 4
    assert noise.evidence["noise_scale_smoothed"] >= NOISE_SCALE_FACTOR * 4
    grown = NOISE_SCALE_FACTOR * noise.evidence["noise_scale_smoothed"]  # room for the noise scale to grow
    assert noise.evidence["suggested_batch_size"] == min(240, int(float(f"{grown:.1g}")))
    assert noise.fix == {"training.batch_size": noise.evidence["suggested_batch_size"]}
    assert f"`training.batch_size: {noise.evidence['suggested_batch_size']}`" in noise.suggestion
    verdict = next(v for v in small.summary.health.instruments if v.instrument == "noise_scale_smoothed")
    assert verdict.verdict == "batch far below the noise scale" and verdict.threshold == NOISE_SCALE_FACTOR * 4
    tiny = train(spirals(tmp_path, 2))  # so noisy that the estimate of |G|² over the window is not even positive
    verdict = next(v for v in tiny.summary.health.instruments if v.instrument == "noise_scale_smoothed")
    assert verdict.value is None and "beyond measure" in verdict.message
    assert next(d for d in tiny.summary.health.diagnoses if d.kind == "gradient_noise").evidence["suggested_batch_size"] == 240
    settings = spirals(tmp_path, 32, name="adam", lr=0.01)
    settings["data"]["n_samples"] = 1000
    big = train(settings)
    # Four epochs are too few to fit spirals (not_converged), but neither the batch nor the rate is blamed.
    assert not {d.kind for d in big.summary.health.diagnoses} & {"gradient_noise", "learning_rate_high",
                                                                "learning_rate_low"}
    assert {v.verdict for v in big.summary.health.instruments} == {"ok"}
    alpha = next(v for v in big.summary.health.instruments if v.instrument == "alpha")
    # An ok α shows the bound of [−0.5, 1] it is nearer, the one it would cross first.
    assert alpha.threshold == (ALPHA_LOW if alpha.value < (ALPHA_LOW + ALPHA_HIGH) / 2 else ALPHA_HIGH)
    report = json.loads(CliRunner().invoke(app, ["report", str(small.run_dir), "--format", "json"]).output)
    assert [v["instrument"] for v in report["instruments"]][:2] == ["noise_scale_smoothed", "norm_test"]
    assert report["diagnoses"] == json.loads(read_summary(small.run_dir / "summary.json").model_dump_json())["health"]["diagnoses"]


def test_the_report_shows_each_instrument_with_its_verdict_and_threshold(tmp_path: Path) -> None:
    run = train(spirals(tmp_path, 4))
    for fmt in ("text", "markdown"):
        text = CliRunner().invoke(app, ["report", str(run.run_dir), "--format", fmt]).output
        section = text[text.index("Instruments") : text.index("Diagnoses")]
        row = next(line for line in section.splitlines() if "noise_scale_smoothed" in line)
        assert "batch far below the noise scale" in row and " 16 " in row.replace("|", " ")
        assert all(name in section for name in ("norm_test", "inner_test", "ortho_test", "alpha"))


def log_with(tmp_path: Path, columns: dict[str, list[float]], losses: list[float], lr: float = 0.1,
             update_ratio: float = 1e-3) -> RunLog:  # fmt: skip
    """A run's logs made by hand: instruments.csv's `total` rows holding `columns`, and the training losses."""
    config = config_from_dict({"data": {"source": "moons"}, "model": {"hidden": [4]}, "loss": "cross_entropy",
                               "optimizer": {"name": "sgd", "lr": lr}})  # fmt: skip
    steps = list(range(1, 1 + max(len(v) for v in columns.values())))
    total = BlockLog(TOTAL, steps, [1] * len(steps), {c: list(columns.get(c, [None] * len(steps))) for c in VALUES})
    metrics = [{"epoch": e + 1, "train_loss": loss, "val_loss": loss} for e, loss in enumerate(losses)]
    layer = LayerLog("layer0", steps, {"update_ratio": [update_ratio] * len(steps)})
    return RunLog(tmp_path, None, config, metrics, [layer], {}, [], InstrumentLog([total]))


def kinds(log: RunLog) -> list[str]:
    return [d.kind for d in judge(log).diagnoses]


def test_alpha_persistently_above_one_is_a_high_learning_rate_below_minus_a_half_a_low_one(tmp_path: Path) -> None:
    overshooting = judge(log_with(tmp_path, {"alpha": [1.4] * 9}, [1.0, 0.9, 0.8]))
    assert [d.kind for d in overshooting.diagnoses] == ["learning_rate_high"]
    assert overshooting.diagnoses[0].evidence["alpha_median"] == 1.4
    assert overshooting.diagnoses[0].evidence["alpha_threshold"] == ALPHA_HIGH
    assert overshooting.diagnoses[0].fix["optimizer.lr"] < overshooting.diagnoses[0].evidence["lr"]
    short = judge(log_with(tmp_path, {"alpha": [-0.9] * 9}, [1.0, 0.9, 0.8]))
    assert [d.kind for d in short.diagnoses] == ["learning_rate_low"]
    assert short.diagnoses[0].evidence["alpha_threshold"] == ALPHA_LOW
    # A healthy α leaves only what the still falling loss says: not converged.
    assert kinds(log_with(tmp_path, {"alpha": [0.2] * 9}, [1.0, 0.9, 0.8])) == ["not_converged"]
    # one wild value among many is no persistent overshoot (the verdict reads the median)
    assert kinds(log_with(tmp_path, {"alpha": [0.1] * 8 + [50.0]}, [1.0, 0.9, 0.8])) == ["not_converged"]


def test_sharpness_beyond_the_stability_limit_counts_only_with_a_climbing_loss(tmp_path: Path) -> None:
    sharp = {"lr_lambda_max": [3.0] * 6}
    climbing = judge(log_with(tmp_path, sharp, [1.0, 0.8, 0.9, 1.1, 1.3]))
    assert [d.kind for d in climbing.diagnoses] == ["learning_rate_high"]
    assert climbing.diagnoses[0].evidence["stability_limit"] == STABILITY_LIMIT
    verdict = next(v for v in climbing.instruments if v.instrument == "lr_lambda_max")
    assert verdict.verdict == "beyond the stability limit with a climbing loss"
    assert kinds(log_with(tmp_path, sharp, [1.0, 0.8, 0.6, 0.5, 0.4])) == []


def test_instruments_that_say_too_high_overrule_an_update_ratio_that_says_too_low(tmp_path: Path) -> None:
    """Never advise raising the rate of a run whose steps overshoot."""
    log = log_with(tmp_path, {"alpha": [2.0] * 9}, [1.0, 1.2, 1.5], update_ratio=1e-7)
    health = judge(log)
    assert [d.kind for d in health.diagnoses] == ["learning_rate_high"]
    assert "raise" not in health.diagnoses[0].suggestion
    agreeing = judge(log_with(tmp_path, {"alpha": [-0.9] * 9}, [1.0, 0.99, 0.98], update_ratio=1e-7))
    assert [d.kind for d in agreeing.diagnoses] == ["learning_rate_low"]
    assert agreeing.diagnoses[0].evidence["update_ratio_median"] == 1e-7
    assert "median α" in agreeing.diagnoses[0].message


def test_a_run_without_instruments_is_judged_as_before(tmp_path: Path) -> None:
    settings = spirals(tmp_path, 64, name="adam", lr=0.01)
    del settings["training"]["instruments"]
    run = train(settings)
    assert read_run(run.run_dir).instruments is None and run.summary.health.instruments == []
