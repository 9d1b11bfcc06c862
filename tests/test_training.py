"""Training: every preset trains, runs are deterministic, early stopping restores the best weights."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import reprolab.jobs.cluster
from conftest import CONF_DIR, PRESETS, clean_env, new_store, quick_overrides
from reprolab import data as datasets
from reprolab.audit.checks import seed_checks
from reprolab.cli import main
from reprolab.config import load_config
from reprolab.jobs.job import Job, worker_context
from reprolab.jobs.run import run_jobs
from reprolab.metrics import class_metrics, target_met
from reprolab.report import comparison_table
from reprolab.results import HISTORY_KEYS
from reprolab.training import evaluate, run_one


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_for_a_couple_of_epochs(quick_config, preset):
    trained, result = run_one(quick_config, preset, seed=0, data=datasets.prepare(quick_config.data))
    assert result.fit["epochs_run"] == 2 and len(result.history) == 2
    assert set(HISTORY_KEYS) <= set(result.history[0])
    dataset = datasets.load(quick_config.data)
    for split in ("train", "val", "test"):
        assert 0.0 <= result.metrics[f"{split}_accuracy"] <= 1.0
        assert result.metrics[f"{split}_loss"] > 0
        counted = class_metrics(dataset.splits[split].y, result.predictions[split], dataset.num_classes)
        assert {key: result.metrics[f"{split}_{key}"] for key in counted} == counted
    assert not trained.model.training


def test_same_config_and_seed_give_identical_metrics(quick_config):
    dataset = datasets.prepare(quick_config.data)
    first = run_one(quick_config, "regularized", seed=1, data=dataset)[1]
    second = run_one(quick_config, "regularized", seed=1, data=dataset)[1]
    other_seed = run_one(quick_config, "regularized", seed=2, data=dataset)[1]
    assert first.history == second.history
    assert first.metrics == second.metrics
    assert first.metrics != other_seed.metrics


def jobs(config, presets, seeds, data=None):
    data = data or datasets.prepare(config.data)
    return [Job(config, preset, seed, data) for preset in presets for seed in seeds]


def test_parallel_runs_equal_serial_runs(quick_config):
    serial = run_jobs(jobs(quick_config, ["baseline", "gru"], [0, 1]), workers=1)
    parallel = run_jobs(jobs(quick_config, ["baseline", "gru"], [0, 1]), workers=2)
    assert [r.metrics for r in serial] == [r.metrics for r in parallel]


def gpu_build() -> bool:
    import torch

    return bool(torch.version.cuda or getattr(torch.version, "hip", None))


FORKED_AFTER_TORCH = """
import json, sys
from reprolab import data as datasets, numerics
from reprolab.config import load_config
from reprolab.jobs.job import Job, worker_context
from reprolab.jobs.run import run_jobs
from reprolab.jobs.background import train_in_background
config = load_config(json.loads(sys.argv[1]), sys.argv[2])
numerics.apply(config.compute.numerics.value)  # as every command does, before torch starts
import torch
torch.set_num_threads(2)
torch.randn(512, 512) @ torch.randn(512, 512)  # this driver's own threads have started
data = datasets.prepare(config.data)
jobs = [Job(config, preset, 0, data) for preset in ("baseline", "gru")]
pooled = [result.metrics for result in run_jobs(jobs, workers=2)]
with train_in_background(jobs[1], progress=False) as job:
    background = job.result()[1].metrics
print(json.dumps({"start": worker_context().get_start_method(), "pooled": pooled, "background": background}))
"""


@pytest.mark.slow  # a process of its own that trains
def test_a_driver_that_computed_with_torch_forks_workers_that_train_as_in_process(quick_config, tmp_path):
    """A driver that has imported torch and computed on two threads forks its workers (a CPU
    build): they train on one thread, give the metrics of a run in this process, and none hangs."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED_AFTER_TORCH, json.dumps(quick_overrides(tmp_path)), str(CONF_DIR)],
        capture_output=True,
        text=True,
        timeout=180,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    forked = json.loads(done.stdout.splitlines()[-1])
    data = datasets.prepare(quick_config.data)
    here = {preset: run_one(quick_config, preset, 0, data)[1].metrics for preset in ("baseline", "gru")}
    assert forked["start"] == ("spawn" if gpu_build() else "fork")
    assert forked["pooled"] == [here["baseline"], here["gru"]] and forked["background"] == here["gru"]


def test_a_driver_holding_a_gpu_build_of_torch_starts_fresh_workers(monkeypatch):
    """A forked child cannot use CUDA once its parent has touched it: with a GPU build of torch
    imported, workers start as fresh interpreters; with a CPU build, they fork."""
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert worker_context().get_start_method() == "fork"
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert worker_context().get_start_method() == "spawn"


def test_a_dask_worker_that_trains_with_other_code_refuses_the_job(quick_config):
    """A Dask worker runs the reprolab and libraries it was started with: a job from a command
    whose training code differs is refused in one line before it trains (its result would be
    recorded under a run key that is not its own); a job that carries its recorded code needs
    only the same libraries."""
    from reprolab.jobs.job import WorkerError
    from reprolab.jobs.worker import _check_trains_as, run_parts, worker_training_code

    here = worker_training_code()
    other = {**here, "code": "0" * 64}
    with pytest.raises(WorkerError, match=r"^compute: a Dask worker trains with other code .* 000000000000 here"):
        run_parts(quick_config, "baseline", 0, None, None, other)
    _check_trains_as(here, shipped=False)
    _check_trains_as(other, shipped=True)
    with pytest.raises(WorkerError, match=rf"torch {re.escape(here['torch'])} there, 0\.0 here"):
        _check_trains_as({**other, "torch": "0.0"}, shipped=True)


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    overrides = [
        *quick_overrides(tmp_path),
        "experiments.regularized.train.max_epochs=200",
        "experiments.regularized.train.lr=0.05",
        "experiments.regularized.train.early_stopping.patience=3",
    ]
    config = load_config(overrides, CONF_DIR)
    dataset = datasets.prepare(config.data)
    trained, result = run_one(config, "regularized", seed=0, data=dataset)
    assert result.fit["stopped_early"]
    assert result.fit["epochs_run"] == result.fit["best_epoch"] + 3 < 200
    best = result.history[result.fit["best_epoch"] - 1]
    assert best["val_loss"] == min(h["val_loss"] for h in result.history)
    # The returned model is the best epoch's, not the last one's.
    assert evaluate(trained.model, dataset).metrics["val_loss"] == pytest.approx(best["val_loss"], abs=1e-6)


def test_without_early_stopping_all_epochs_run(quick_config):
    result = run_one(quick_config, "baseline", seed=0, data=datasets.prepare(quick_config.data))[1]
    assert not result.fit["stopped_early"] and result.fit["best_epoch"] == 2


def test_cli_train_prints_the_run(tmp_path, capsys):
    new_store(tmp_path)
    code = main(
        [
            "--config-dir",
            str(CONF_DIR),
            "train",
            "--no-progress",
            "experiment=gru",
            "seed=4",
            *quick_overrides(tmp_path),
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["preset"], out["seed"], out["epochs_run"]) == ("gru", 4, 2)
    assert "test_accuracy" in out and len(out["dataset_digest"]) == 64


def test_comparison_table_judges_the_target_over_the_seeds(quick_config):
    dataset = datasets.prepare(quick_config.data)
    results = run_jobs(jobs(quick_config, ["baseline"], [0, 1], dataset), workers=1)
    checks = seed_checks(results, dataset.labels(), quick_config.data.target, 0.95)
    table = comparison_table(results, checks, quick_config.data.target)
    hits = sum(target_met(r.metrics, quick_config.data.target) for r in results)
    assert "| baseline | 0,1 |" in table and f"({hits}/2 seeds" in table
    # A verdict over both seeds, never "yes" unless every seed meets the target.
    assert ("| yes (" in table) == (hits == 2)


@pytest.mark.slow
def test_fixed_dataset_reproduces_overfitting_and_the_fix(tmp_path):
    """The headline claim on the real fixed dataset, seed 0: the baseline memorises, the fix works.

    `reprolab compare` checks seeds 0-4; this keeps one real check of each side in the suite.
    """
    config = load_config([], CONF_DIR)
    dataset = datasets.prepare(config.data, path=tmp_path / "fixed.npz")
    baseline = run_one(config, "baseline", seed=0, data=dataset, progress=False)[1].metrics
    fixed = run_one(config, "regularized", seed=0, data=dataset, progress=False)[1].metrics
    # Memorised, well short of the target's validation floor (0.7535 and 0.7615 seen on two machines'
    # CPU kernels: the bound is the claim, not one machine's number).
    assert baseline["train_accuracy"] >= 0.97 and baseline["val_accuracy"] >= 0.65
    assert baseline["train_accuracy"] - baseline["val_accuracy"] >= 0.15 and not target_met(
        baseline, config.data.target
    )
    assert target_met(fixed, config.data.target)


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_check_on_the_cpu():
    """scripts/check_gpu.py is for GPU machines; `--device cpu` runs the same check here."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/check_gpu.py"), "--device", "cpu", "--epochs", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "cpu runs repeat exactly: True" in done.stdout and "ms per epoch" in done.stdout


def test_a_lost_batch_is_sent_again_until_too_many_losses(capsys):
    """The rule local pools and Dask share (jobs.until_done): a batch lost with a worker is sent
    again with the jobs not finished; lost more than MAX_LOST_POOLS times, the sweep stops."""
    from reprolab.jobs.job import WorkerError
    from reprolab.jobs.local import MAX_LOST_POOLS, until_done

    remaining, batches = [0, 1, 2], []

    def finish_one_then_lose_the_rest_once() -> None:
        batches.append(list(remaining))
        remaining.pop(0)
        if len(batches) == 1:
            raise ConnectionError("worker gone")
        remaining.clear()

    until_done(
        remaining,
        finish_one_then_lose_the_rest_once,
        ConnectionError,
        lambda count, cause: "",
        lambda left: f"{left} again",
    )
    assert batches == [[0, 1, 2], [1, 2]] and capsys.readouterr().err == "reprolab: 2 again\n"

    def lost_every_time() -> None:
        raise ConnectionError("worker gone")

    with pytest.raises(WorkerError, match=rf"^lost {MAX_LOST_POOLS + 1} times \(worker gone\)$"):
        until_done(
            [0], lost_every_time, ConnectionError, lambda count, cause: f"lost {count} times ({cause})", lambda left: ""
        )


def test_a_dataset_that_cannot_reach_a_dead_dask_worker_is_sent_again(quick_config, monkeypatch):
    """Scattering to a worker that died since the scheduler listed it fails with a closed
    connection (seen in a newcomer walk's killed-worker test): a lost batch, sent again, not a
    failed sweep."""
    from distributed.comm.core import CommClosedError

    from reprolab.jobs.cluster import _dask_batch, _LostData

    class ClusterWithADeadWorker:
        def scatter(self, *args, **kwargs):
            raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")

    monkeypatch.setattr(reprolab.jobs.cluster, "LOST_WORKER_WAIT_S", 0)
    job = Job(quick_config, "baseline", 0, datasets.prepare(quick_config.data))
    with pytest.raises(_LostData, match="sending a dataset to the Dask cluster at tcp://x failed"):
        _dask_batch(ClusterWithADeadWorker(), [job], [0], "tcp://x", lambda *a: None)
