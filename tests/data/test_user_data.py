"""Your own data through the `reprolab` command, as a new user would run it: every training is a
recorded MLflow run on the data actually given, and bad layouts or labels are one line.

The datasets are built here (`userdata.py`): 4 and 9 classes, multivariate, variable lengths,
a tiny validation split, a transposed array, 1-based labels.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import userdata
from conftest import PRESETS, new_store, reprolab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def on_file(tmp_path: Path, path: Path, *overrides: str) -> list[str]:
    """Overrides for a user file, 3 epochs for every preset, a store of the test's own."""
    return [
        "data=npz",
        f"data.user_file={path}",
        f"data.prepared_path={tmp_path / 'prepared.npz'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *(f"experiments.{name}.train.max_epochs=3" for name in PRESETS),
        *overrides,
    ]


def store_runs(tmp_path: Path, kind: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab")
    query = f"tags.`reprolab.kind` = '{kind}'" if kind else ""
    return client.search_runs([experiment.experiment_id], query, max_results=1000)


def train_output(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout[done.stdout.index("{") :])


def one_line_refusal(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reprolab: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_train_on_a_then_b_trains_on_b_and_records_both(tmp_path):
    new_store(tmp_path)
    X, y, _ = userdata.series(n=90, classes=3, seed=1)
    a = userdata.save(tmp_path / "A.npz", X=X, y=y)
    X2, y2, _ = userdata.series(n=90, classes=3, seed=2)
    b = userdata.save(tmp_path / "B.npz", X=X2, y=y2)
    first = train_output(reprolab(tmp_path, "train", *on_file(tmp_path, a)))
    second = train_output(reprolab(tmp_path, "train", *on_file(tmp_path, b)))
    assert first["dataset_digest"] != second["dataset_digest"]
    assert first["val_accuracy"] != second["val_accuracy"] or first["train_loss"] != second["train_loss"]
    # B's numbers: the same as training on B alone, in a store of its own.
    alone = tmp_path / "alone"
    alone.mkdir()
    new_store(alone)
    again = train_output(reprolab(alone, "train", *on_file(alone, b)))
    assert {k: again[k] for k in ("dataset_digest", "val_accuracy", "train_loss")} == {
        k: second[k] for k in ("dataset_digest", "val_accuracy", "train_loss")
    }
    runs = {run.info.run_id: run for run in store_runs(tmp_path, "train")}
    assert set(runs) == {first["mlflow_run_id"], second["mlflow_run_id"]}
    for output in (first, second):
        run = runs[output["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["reprolab.dataset_digest"] == output["dataset_digest"]
        assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {output["dataset_digest"][:36]}

    missing = one_line_refusal(
        reprolab(tmp_path, "train", *on_file(tmp_path, tmp_path / "nonexistent.npz"), check=False)
    )
    assert "nonexistent.npz not found" in missing
    assert {run.info.status for run in store_runs(tmp_path)} == {"FINISHED"}


def test_changed_generator_settings_are_refused_or_built_afresh(tmp_path):
    new_store(tmp_path)
    base = [f"data.prepared_path={tmp_path / 'p.npz'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    small = ["data=synthetic_small", *base, "experiments.regularized.train.max_epochs=2"]
    reprolab(tmp_path, "prepare", *small)
    pinned = one_line_refusal(reprolab(tmp_path, "train", *small, "data.generator.n_train=32", check=False))
    assert "data.expected_digest" in pinned
    unpinned = train_output(
        reprolab(tmp_path, "train", *small, "data.generator.n_train=32", "data.expected_digest=null")
    )
    assert unpinned["dataset_digest"] != load_digest(tmp_path / "p.npz")  # not the prepared file


def load_digest(path: Path) -> str:
    from reprolab.data import content_digest

    with np.load(path) as npz:
        return content_digest({key: npz[key] for key in npz.files})


@pytest.mark.parametrize("classes, channels", [(4, 3), (9, 1)])
def test_many_classes_train_compare_and_audit(tmp_path, classes, channels):
    new_store(tmp_path)
    X, y, _ = userdata.series(n=180, classes=classes, channels=channels, seed=classes)
    path = userdata.save(tmp_path / "mine.npz", X=X, y=y)
    overrides = on_file(tmp_path, path, "data.target.min_val_accuracy=0.99")
    train = train_output(reprolab(tmp_path, "train", *overrides))
    assert 0 <= train["val_accuracy"] <= 1
    summary = json.loads(reprolab(tmp_path, "prepare", *overrides).stdout)
    assert summary["num_classes"] == classes and summary["num_features"] == channels
    assert sum(summary["train"]["class_counts"]) == summary["train"]["size"] and "positive_rate" not in summary

    compare = reprolab(tmp_path, "compare", "--seeds", "0-2", "--presets", "regularized,lstm", *overrides)
    assert "Bayes-optimal" not in compare.stdout  # unknown for user data: nothing printed
    assert "no: validation accuracy" in compare.stdout and "< 0.99" in compare.stdout  # the bound that failed
    # `train` above ran regularized with seed 0: compare reuses that run and trains the 5 others.
    assert "1 of 6 runs reused" in compare.stdout
    (parent,) = store_runs(tmp_path, "compare-summary")
    children = store_runs(tmp_path, "compare")
    assert len(children) == 5 and {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    assert {run.info.status for run in store_runs(tmp_path)} == {"FINISHED"}

    # One change (the cell): the audit's measure on many classes, from runs that compare made.
    audit_sides = ("--before", "regularized", "--after", "lstm")
    reprolab(tmp_path, "audit", *audit_sides, "--seeds", "0-1", "--output-dir", "audit", "--no-models", *overrides)
    audit = json.loads((tmp_path / "audit/summary.json").read_text())
    assert audit["runs_reused"] == 4  # before and after, seeds 0-1: compare trained them
    for configuration in audit["configurations"].values():
        for key in ("val_accuracy", "test_accuracy", "train_accuracy"):
            assert 0 <= configuration[key]["low"] <= configuration[key]["mean"] <= configuration[key]["high"] <= 1
    assert "validation accuracy" in audit["verdict"] and "0.99" in audit["verdict"]
    assert {run.info.status for run in store_runs(tmp_path)} == {"FINISHED"}


def test_zero_padding_without_lengths_is_warned_by_the_commands_and_kept_on_the_run(tmp_path):
    new_store(tmp_path)
    X, y, _ = userdata.series(n=60, classes=2, channels=1, steps=20, seed=3, variable=True)
    path = userdata.save(tmp_path / "zeros.npz", X=X, y=y)  # zero-padded at the end, no lengths
    prepared = reprolab(tmp_path, "prepare", *on_file(tmp_path, path), timeout=120)
    (line,) = [line for line in prepared.stderr.splitlines() if line.startswith("warning: ")]
    assert "sequences end in 2 or more all-zero steps" in line and "give `lengths`" in line
    assert json.loads(prepared.stdout)["warnings"] == [line.removeprefix("warning: ")]
    trained = reprolab(tmp_path, "train", *on_file(tmp_path, path, "experiment=baseline"))
    assert line in trained.stderr.splitlines()
    (run,) = store_runs(tmp_path, "train")
    assert run.data.tags["reprolab.data.warnings"] == line.removeprefix("warning: ")
    # A compare resting on runs of this file says so in its output and its comparison.md; the
    # file sets no target, so no run is tagged as meeting one and no cell says yes.
    compare = reprolab(tmp_path, "compare", "--presets", "baseline", "--seeds", "0-1", *on_file(tmp_path, path))
    warning = line.removeprefix("warning: ")
    assert compare.stdout.count(warning) == 1 and not re.search(r"\byes\b", compare.stdout), compare.stdout
    (summary,) = store_runs(tmp_path, "compare-summary")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    written = Path(client.download_artifacts(summary.info.run_id, "compare/comparison.md", str(tmp_path)))
    assert written.read_text().count(warning) == 1
    assert {r.data.tags["reprolab.target_met"] for r in store_runs(tmp_path, "compare")} == {"n/a"}


def test_padding_side_does_not_matter_with_lengths(tmp_path):
    new_store(tmp_path)
    X, y, lengths = userdata.series(n=120, classes=2, channels=2, steps=30, seed=5, variable=True)
    end = userdata.save(tmp_path / "end.npz", X=X, y=y, lengths=lengths)
    front = userdata.save(tmp_path / "front.npz", X=userdata.pad_front(X, lengths), y=y, lengths=lengths)
    with_nan = X.copy()
    with_nan[np.arange(X.shape[1])[None, :] >= lengths[:, None]] = np.nan
    nan_padded = userdata.save(tmp_path / "nan.npz", X=with_nan, y=y)
    outputs = [
        train_output(reprolab(tmp_path, "train", *on_file(tmp_path, end, "data.padding=end"))),
        train_output(reprolab(tmp_path, "train", *on_file(tmp_path, front, "data.padding=front"))),
        train_output(reprolab(tmp_path, "train", *on_file(tmp_path, nan_padded))),
    ]
    assert len({output["dataset_digest"] for output in outputs}) == 1  # the same sequences
    assert len({output["val_accuracy"] for output in outputs}) == 1 and len({o["train_loss"] for o in outputs}) == 1


def test_a_tiny_validation_split_gives_honest_intervals_and_a_warning(tmp_path):
    new_store(tmp_path)
    X, y, _ = userdata.series(n=40, classes=2, seed=3)
    path = userdata.save(tmp_path / "tiny.npz", X=X, y=y)
    overrides = on_file(tmp_path, path, "data.val_fraction=0.25", "data.test_fraction=0.25")
    reprolab(tmp_path, "audit", "--seeds", "0-2", "--output-dir", "audit", "--no-models", *overrides)
    audit = json.loads((tmp_path / "audit/summary.json").read_text())
    assert audit["split_sizes"]["val"] == 10
    assert any("only 10 sequences" in warning for warning in audit["warnings"])
    assert "**Warning.**" in (tmp_path / "audit/audit.md").read_text()
    for configuration in audit["configurations"].values():
        interval = configuration["val_accuracy"]
        assert 0 <= interval["low"] <= interval["high"] <= 1
        assert interval["high"] - interval["low"] > 0.05  # 10 sequences cannot give a narrow interval


def test_a_transposed_array_is_refused_with_the_fix_or_read_as_told(tmp_path):
    new_store(tmp_path)
    X, y, _ = userdata.series(n=60, classes=2, channels=1, steps=150, seed=4)
    path = userdata.save(tmp_path / "channels_first.npz", X=X.transpose(0, 2, 1), y=y)  # [N, 1, T]
    refused = one_line_refusal(reprolab(tmp_path, "train", *on_file(tmp_path, path), check=False))
    assert "[60, 1, 150]" in refused and "data.layout=nft" in refused
    told = train_output(reprolab(tmp_path, "train", *on_file(tmp_path, path, "data.layout=nft")))
    assert told["epochs_run"] == 3
    # Short sequences stay legitimate: 5 steps of 10 features is not mistaken for a transposition.
    short, y5, _ = userdata.series(n=60, classes=2, channels=10, steps=5, seed=6)
    train_output(reprolab(tmp_path, "train", *on_file(tmp_path, userdata.save(tmp_path / "short.npz", X=short, y=y5))))


@pytest.mark.parametrize(
    "labels, message",
    [
        (lambda y: y + 1, "labels are 1..2: they must run 0..K-1; subtract 1 (y - 1)"),
        (lambda y: np.where(y == 1, 10**6, 0), "labels must be 0..K-1, found {0, 1000000}"),
        (lambda y: y.astype(float) + 0.5, "labels must be integers 0..K-1, got dtype float64"),
    ],
    ids=["1-based", "huge", "fractional"],
)
def test_bad_labels_are_refused_with_the_fix(tmp_path, labels, message):
    X, y, _ = userdata.series(n=60, classes=2, seed=7)
    path = userdata.save(tmp_path / "labels.npz", X=X, y=labels(y))
    refused = one_line_refusal(reprolab(tmp_path, "train", *on_file(tmp_path, path), check=False))
    assert message in refused
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "prepared.npz").exists()
