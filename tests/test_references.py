"""The 1-NN references: DTW's hand-computed distances, a stand-in set whose answer is known
(shifted bumps: DTW finds every class, Euclidean distance cannot), padding, and their rows and
MLflow runs in `reprolab compare`."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import new_store, reprolab
from reprolab.data import Dataset, Split
from reprolab.references import dtw, euclidean, references


def _series(*values: list[float]) -> np.ndarray:
    """Sequences of one feature, NaN-padded to the longest."""
    steps = max(len(v) for v in values)
    return np.array([[[x] for x in v] + [[np.nan]] * (steps - len(v)) for v in values])


def test_dtw_is_the_cheapest_warping_path_over_each_pairs_real_steps():
    a, b = _series([0, 1, 2], [0, 2]), _series([0, 0, 1, 2], [1])
    distances = dtw(a, b, np.array([3, 2]), np.array([4, 1]))
    # [0, 1, 2] warps onto [0, 0, 1, 2] at no cost; [0, 2] onto [1]: (0 - 1)^2 + (2 - 1)^2.
    # [0, 1, 2] onto [1]: 1 + 0 + 1; [0, 2] onto [0, 0, 1, 2]: 0 + 0 + (2 - 1)^2 + 0.
    assert distances == pytest.approx(np.sqrt([[0, 2], [1, 2]]))
    assert euclidean(_series([0, 3]), _series([4, 0]), None, None)[0, 0] == pytest.approx(5.0)


def _bumps(n: int, steps: int, at: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: one bump up, class 1: one bump down, at a random step in `at`."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.zeros((n, steps, 1))
    X[np.arange(n), rng.integers(*at, n), 0] = np.where(y == 0, 1.0, -1.0)
    return X, y


def _dataset(held_out_length: int = 30) -> Dataset:
    """Training bumps at steps 1-4, held-out ones at steps 10-17, so no two share a step: every
    training sequence is sqrt(2) away from a held-out one by Euclidean distance (a tie, which
    goes to the first, class 0), and a bump of its own class 0 away by DTW."""
    splits = {"train": _bumps(8, 30, (1, 5), 0)}
    for seed, name in ((1, "val"), (2, "test")):
        X, y = _bumps(40, 30, (10, 18), seed)
        X[:, held_out_length:] = np.nan  # shorter sequences, NaN-padded
        splits[name] = (X, y)
    return Dataset("bumps", {k: Split(X.astype(np.float32), y) for k, (X, y) in splits.items()}, "d", "s")


def test_on_shifted_bumps_dtw_finds_every_class_and_euclidean_distance_cannot():
    found = references(["euclidean", "dtw"], _dataset())
    assert found["1-NN DTW"]["val_accuracy"] == 1.0 and found["1-NN DTW"]["test_balanced_accuracy"] == 1.0
    assert found["1-NN Euclidean"]["val_accuracy"] == 0.5 and found["1-NN Euclidean"]["val_recall_class0"] == 1.0


def test_padded_sequences_leave_euclidean_out_and_dtw_aligns_their_real_steps():
    found = references(["euclidean", "dtw"], _dataset(held_out_length=20))
    assert list(found) == ["1-NN DTW"] and found["1-NN DTW"]["test_accuracy"] == 1.0


@pytest.mark.slow  # trains
def test_compare_shows_the_references_beside_the_presets_and_records_them_as_runs_of_their_own(tmp_path):
    from mlflow.tracking import MlflowClient

    new_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    small = ["data=synthetic_small", f"tracking.uri={uri}", "experiments.gru.train.max_epochs=2"]
    done = reprolab(tmp_path, "compare", "--presets", "gru", "--seeds", "0", *small)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_experiments()[0].experiment_id
    found = {r.data.tags.get("reprolab.kind"): r for r in client.search_runs([runs], max_results=100)}
    (summary,) = [r for r in client.search_runs([runs]) if r.data.tags.get("reprolab.kind") == "compare-summary"]
    refs = [r for r in client.search_runs([runs]) if r.data.tags.get("reprolab.kind") == "reference"]
    assert {r.data.tags["reprolab.reference"] for r in refs} == {"1-NN Euclidean", "1-NN DTW"}
    for ref in refs:
        assert ref.data.tags["mlflow.parentRunId"] == summary.info.run_id and "reprolab.run_key" not in ref.data.tags
        assert ref.data.tags["reprolab.dataset_digest"] == summary.data.tags["reprolab.dataset_digest"]
        row = f"| {ref.data.tags['reprolab.reference']} | {ref.data.metrics['val_accuracy']:.3f} |"
        assert row in done.stdout and ref.info.run_id in done.stdout, done.stdout
    assert "compare" in found
    none = reprolab(tmp_path, "compare", "--presets", "gru", "--seeds", "0", *small, "references=[]")
    assert "1-NN" not in none.stdout


def test_the_pipelines_report_shows_the_references_after_the_presets_over_seeds_as_compare_does():
    from conftest import CONF_DIR
    from reprolab.config import load_config
    from reprolab.report import pipeline_report, references_table

    target = load_config([], CONF_DIR).data.target

    metrics = {f"{split}_accuracy": 0.5 for split in ("train", "val", "test")}
    row = {"preset": "p", "metrics": metrics, "seed": 0, "dataset_digest": "d", "best_epoch": 1, "epochs_run": 1}
    shown = references_table({"1-NN DTW": {**metrics, "test_balanced_accuracy": 0.5}}, {"1-NN DTW": "run"})
    over_seeds = ([0], "TABLE", "NOTE")
    report = pipeline_report([{**row, "mlflow_run_id": "r"}], "x", target, None, {}, over_seeds, [], shown)
    assert report.index("TABLE") < report.index("1-NN DTW") < report.index("## Seed 0")
