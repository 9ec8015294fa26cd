"""Sweeps on a Dask cluster: the same trials, bit for bit, as the local pool; files travel with trials; a worker
killed mid-trial loses nothing."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import require

require("distributed", "dask")

from autobp.common.errors import ConfigError  # noqa: E402
from autobp.sweeps.cluster import DaskExecutor, pack, run_shipped  # noqa: E402
from autobp.sweeps.executor import run_trial  # noqa: E402
from autobp.sweeps.run import run_sweep  # noqa: E402


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dask-workers")


@pytest.fixture(scope="module")
def cluster(scratch: Path):
    """A LocalCluster on loopback: two worker processes whose scratch folders are temporary."""
    with DaskExecutor(workers=2, local_directory=str(scratch)) as executor:
        yield executor


def write_sweep(folder: Path, lrs: list[float], epochs: int = 3) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(120)
    rows = ["a,b,c,y"] + [",".join(map(repr, [*row, target])) for row, target in zip(x.tolist(), y.tolist())]
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("\n".join(rows) + "\n")
    base = {
        "name": "base",
        "data": {"source": "csv", "path": "data/table.csv", "target": "y"},
        "model": {"hidden": [6], "activation": "identity"},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 8, "checkpoint_every": 1},
    }
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"base": "base.yaml", "name": "lrs", "parameters": {"optimizer.lr": lrs}}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return folder / "sweep.yaml"


def trial_files(sweep_dir: Path) -> dict[str, dict[str, bytes]]:
    files = {}
    for trial in sorted(sweep_dir.glob("trial-*")):
        metrics = [line.rsplit(",", 1)[0] for line in (trial / "metrics.csv").read_text().splitlines()]
        with np.load(trial / "model.npz") as model:
            weights = {key: model[key].tobytes() for key in model.files}
        files[trial.name] = {"metrics": "\n".join(metrics).encode(), "gradients": (trial / "gradients.csv").read_bytes(),
                             **weights}  # fmt: skip
    return files


def test_dask_sweep_equals_the_local_pool_trial_for_trial(cluster, tmp_path: Path) -> None:
    sweep_file = write_sweep(tmp_path, [0.01, 100.0, 0.003])  # lr 100 diverges
    local = run_sweep([sweep_file], output=tmp_path / "local", jobs=2)
    remote = run_sweep([sweep_file], output=tmp_path / "dask", jobs=cluster.slots, executor=cluster)
    assert [o.status for o in local.outcomes] == [o.status for o in remote.outcomes] == ["completed", "diverged", "completed"]
    assert remote.exit_code == local.exit_code == 4
    assert trial_files(remote.directory) == trial_files(local.directory)
    assert (remote.directory / "trials.csv").read_text().count("diverged") == 1
    resolved = yaml.safe_load((remote.directory / "trial-000" / "config.yaml").read_text())
    assert resolved["data"]["path"] == str(tmp_path / "data" / "table.csv")  # the client's path, not the worker's


def test_a_worker_needs_no_client_paths(tmp_path: Path, monkeypatch) -> None:
    """What a worker receives is enough: the data file's content, not its path on the client."""
    sweep_file = write_sweep(tmp_path, [0.01])
    from autobp.sweeps.plan import plan_sweep

    config = plan_sweep([sweep_file], output=tmp_path / "out").trials[0].config
    content = Path(config["data"]["path"]).read_bytes()
    (tmp_path / "data" / "table.csv").unlink()  # gone from the "client"
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outcome, archive = run_shipped(run_trial, config, {("data", "path"): content})
    assert outcome["status"] == "completed"
    assert {"metrics.csv", "model.npz", "summary.json"} <= set(_names(archive))


def _names(archive: bytes) -> list[str]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.getnames()


def test_pack_keeps_a_run_directory_flat(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    assert _names(pack(tmp_path)) == ["metrics.csv"]


def test_a_killed_worker_loses_no_trial(cluster, scratch: Path, tmp_path: Path) -> None:
    """SIGKILL a worker in the middle of a trial: the scheduler runs that trial again, to its end, and every trial's
    files are those of a sweep never disturbed."""
    sweep_file = write_sweep(tmp_path, [0.01, 0.02, 0.03, 0.04], epochs=150)
    result: dict = {}
    sweeping = threading.Thread(
        target=lambda: result.update(done=run_sweep([sweep_file], output=tmp_path / "out", jobs=2, executor=cluster))
    )
    sweeping.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(_mid_run(m) for m in scratch.glob("**/autobp-trial-*/run/metrics.csv")):
        time.sleep(0.02)
    assert time.monotonic() < deadline, "no trial started on the cluster"
    busy = sorted(worker for worker, tasks in cluster.client.processing().items() if tasks)  # 4 trials, 2 at a time
    assert busy, "no worker holds a trial"
    os.kill(cluster.client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
    sweeping.join(timeout=300)
    assert not sweeping.is_alive()
    done = result["done"]
    assert [outcome.status for outcome in done.outcomes] == ["completed"] * 4 and done.exit_code == 0
    undisturbed = run_sweep([sweep_file], output=tmp_path / "local", jobs=2)
    assert trial_files(done.directory) == trial_files(undisturbed.directory)  # all 150 epochs, bit for bit


def _mid_run(metrics: Path) -> bool:
    try:
        return len(metrics.read_text().splitlines()) > 3
    except FileNotFoundError:
        return False


def test_without_distributed_the_option_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ConfigError, match=r"pip install 'autobp\[dask\]'"):
        DaskExecutor()


def test_scheduler_needs_the_dask_executor(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autobp.cli import app

    result = CliRunner().invoke(app, ["sweep", str(write_sweep(tmp_path, [0.01])), "--scheduler", "tcp://127.0.0.1:8786"])
    assert result.exit_code == 2 and "--scheduler goes with --executor dask" in result.output


def test_the_cli_runs_a_sweep_on_a_local_cluster(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autobp.cli import app

    sweep_file = write_sweep(tmp_path, [0.01, 0.003], epochs=2)
    result = CliRunner().invoke(app, ["sweep", str(sweep_file), "--executor", "dask", "--jobs", "2", "--quiet",
                                      "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 completed" in result.output


def test_doctor_and_health_pruning_run_on_the_cluster_as_on_the_local_pool(cluster, tmp_path: Path) -> None:
    """Doctor's trials and a trial's own health check need nothing but the executor: the same verdicts either way."""
    import shutil

    from test_sweep_health import sweep_file

    from autobp.tools.doctor import run_doctor
    from autobp.training.entry import train

    run = train(Path(__file__).parent.parent / "configs" / "deep_sigmoid.yaml",
                ["training.epochs=6", f"output.dir={tmp_path / 'runs'}"]).run_dir  # fmt: skip
    shutil.copytree(run, tmp_path / "copy")
    remote = run_doctor(run, jobs=cluster.slots, executor=cluster).record
    local = run_doctor(tmp_path / "copy", jobs=2).record
    assert remote.best is not None and remote.treatments[0].cured
    assert [t.model_dump() for t in remote.treatments] == [t.model_dump() for t in local.treatments]
    path = sweep_file(tmp_path, {"optimizer.lr": [0.05, 5.0]}, {"method": "health", "min_epochs": 3})
    swept = run_sweep([path], output=tmp_path / "dask", jobs=cluster.slots, executor=cluster)
    assert [(o.status, o.epochs) for o in swept.outcomes] == [("completed", 12), ("pruned", 3)]
    assert swept.outcomes[1].reason.startswith("health at epoch 3: learning_rate_high")
