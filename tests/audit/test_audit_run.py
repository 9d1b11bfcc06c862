"""`reprolab audit` end to end on the small dataset with short training: the report, its
figures, the MLflow runs and summary run, and the refusal of a dataset-digest mismatch."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest

from conftest import new_store, reprolab, small_overrides

pytestmark = pytest.mark.slow
CHANGES = ("hidden size", "dropout", "learning rate", "early stopping")


def client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("audit")
    new_store(tmp_path)
    reprolab(
        tmp_path, "audit", "--seeds", "0-1", "--workers", "2", "--output-dir", "out", *small_overrides(tmp_path, 3)
    )
    return tmp_path


def test_report_lists_every_change_with_effects_and_a_verdict(audited):
    report = (audited / "out/audit.md").read_text()
    assert "**Verdict.** " in report
    summary = json.loads((audited / "out/summary.json").read_text())
    assert list(summary["changes"]) == list(CHANGES)
    for name in CHANGES:
        assert sum(line.startswith(f"| {name} | ") for line in report.splitlines()) >= 2  # keys, effects
        for context in ("alone", "in_after"):
            interval = summary["changes"][name][context]["val_accuracy"]
            assert interval["low"] <= interval["mean"] <= interval["high"]
    configurations = set(summary["configurations"])
    assert len(configurations) == 2 ** len(CHANGES)
    assert {"before", "after"} | {f"before + {c}" for c in CHANGES} | {
        f"after - {c}" for c in CHANGES
    } <= configurations
    assert "before + hidden size + dropout" in configurations
    assert summary["verdict"] in report
    for key, attribution in summary["attribution"].items():
        shares = [attribution["changes"][name]["shapley"]["mean"] for name in CHANGES]
        assert sum(shares) == pytest.approx(attribution["total"]["mean"], abs=1e-9), key
        after, before = (summary["configurations"][side][key]["mean"] for side in ("after", "before"))
        assert attribution["total"]["mean"] == pytest.approx(after - before, abs=1e-9)
        assert len(attribution["interactions"]) == 6
    assert [step["added"] for step in summary["greedy_path"]] and set(CHANGES) == {
        step["added"] for step in summary["greedy_path"]
    }
    assert "## Attribution: each change's Shapley share" in report


def test_figures_are_real_pngs(audited):
    from matplotlib import image

    for name in ("learning_curves.png", "attribution.png", "ablation.png", "confusion.png"):
        pixels = image.imread(audited / "out" / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels.std() > 0.05  # not a blank canvas


def test_every_run_is_a_finished_mlflow_run_linked_from_the_summary_run(audited):
    mlflow = client(audited)
    experiment = mlflow.get_experiment_by_name("reprolab")
    summary = json.loads((audited / "out/summary.json").read_text())
    audit_id = summary["audit_id"]
    runs = mlflow.search_runs([experiment.experiment_id], f"tags.`reprolab.audit_id` = '{audit_id}'")
    ablation = [run for run in runs if run.data.tags["reprolab.kind"] == "audit"]
    assert len(ablation) == 2 ** len(CHANGES) * 2 and {run.info.status for run in runs} == {"FINISHED"}
    with (audited / "out/runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["mlflow_run_id"] for row in rows} == {run.info.run_id for run in ablation}
    for run in ablation:
        row = next(row for row in rows if row["mlflow_run_id"] == run.info.run_id)
        assert run.data.tags["reprolab.audit.variant"] == row["configuration"]
        assert run.data.metrics["val_accuracy"] == pytest.approx(float(row["val_accuracy"]), abs=1e-9)
        assert run.data.params["seed"] == row["seed"]
        assert run.inputs.dataset_inputs  # the dataset, with its digest
    (summary_run,) = [run for run in runs if run.data.tags["reprolab.kind"] == "audit-summary"]
    artifacts = {a.path for a in mlflow.list_artifacts(summary_run.info.run_id, "audit-summary")}
    assert artifacts == {
        f"audit-summary/{name}"
        for name in (
            "audit.md",
            "summary.json",
            "runs.csv",
            "learning_curves.png",
            "attribution.png",
            "ablation.png",
            "confusion.png",
        )
    }
    assert summary_run.data.tags["mlflow.note.content"].startswith(summary["verdict"])


def test_an_audit_between_two_recorded_runs_equals_the_audit_of_their_presets(audited):
    """Sides from run ids (a bare id and a runs:/ URI): every configuration comes from the run
    cache, the numbers are the presets' audit's, and both runs get a link to the audit."""
    with (audited / "out/runs.csv").open() as handle:
        rows = {(row["configuration"], row["seed"]): row["mlflow_run_id"] for row in csv.DictReader(handle)}
    before, after = rows[("before", "0")], rows[("after", "1")]
    overrides = small_overrides(audited, 3)
    audit = ["audit", "--seeds", "0-1", "--output-dir", "from-runs", *overrides]
    reprolab(audited, *audit[:1], "--before", before, "--after", f"runs:/{after}/model", *audit[1:])
    presets = json.loads((audited / "out/summary.json").read_text())
    runs = json.loads((audited / "from-runs/summary.json").read_text())
    assert runs["runs_reused"] == 2 ** len(CHANGES) * 2
    assert (runs["before"], runs["after"]) == (f"before (run {before[:8]})", f"after (run {after[:8]})")
    for key in ("configurations", "attribution", "changes", "greedy_path"):
        assert runs[key] == presets[key], key
    mlflow = client(audited)
    for run_id in (before, after):
        assert mlflow.get_run(run_id).data.tags["reprolab.audit.explained_by"] == runs["audit_id"]


def test_results_do_not_depend_on_the_worker_count(audited, tmp_path):
    new_store(tmp_path)
    # What the output folder already holds stays, but for the audit's own files (replaced).
    folder = tmp_path / "serial"
    (folder / "sub").mkdir(parents=True)
    (folder / "precious.txt").write_text("mine")
    (folder / "sub/kept.txt").write_text("mine too")
    os.mkfifo(folder / "a.fifo")
    (folder / "audit.md").write_text("an old report")
    reprolab(
        tmp_path,
        "audit",
        "--seeds",
        "0-1",
        "--workers",
        "1",
        "--no-models",
        "--output-dir",
        "serial",
        *small_overrides(tmp_path, 3),
    )

    def metrics(path: Path) -> dict:
        with path.open() as handle:
            return {(row["configuration"], row["seed"]): row["val_accuracy"] for row in csv.DictReader(handle)}

    assert metrics(tmp_path / "serial/runs.csv") == metrics(audited / "out/runs.csv")
    assert (folder / "precious.txt").read_text() == "mine" and (folder / "sub/kept.txt").read_text() == "mine too"
    assert stat.S_ISFIFO((folder / "a.fifo").stat().st_mode)
    assert "**Verdict.** " in (folder / "audit.md").read_text()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("victim", ["file", "fifo at audit.md", "folder at summary.json"])
def test_an_output_dir_that_would_lose_something_is_refused_before_training(tmp_path, victim):
    new_store(tmp_path)
    out = tmp_path / "out"
    if victim == "file":
        out.write_text("not a folder")
    else:
        out.mkdir()
        if victim == "fifo at audit.md":
            os.mkfifo(out / "audit.md")
        else:
            (out / "summary.json").mkdir()
    done = reprolab(
        tmp_path, "audit", "--seeds", "0-1", "--output-dir", "out", *small_overrides(tmp_path, 3), check=False
    )
    error = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in error and "out" in error, error
    assert "Traceback" not in done.stderr and "[1/" not in done.stdout  # nothing trained
    assert (
        (out.read_text() == "not a folder")
        if victim == "file"
        else sorted(p.name for p in out.iterdir()) == ["audit.md" if victim == "fifo at audit.md" else "summary.json"]
    )


def test_a_dataset_digest_mismatch_is_refused_unless_allowed(tmp_path):
    # The before side comes from a params file with the default (full) dataset; the after side
    # from the composed config with the small one.
    before = tmp_path / "before-params.yaml"
    reprolab(
        tmp_path, "compose", "-o", str(before), f"data.prepared_path={tmp_path / 'full.npz'}",
        "experiments.baseline.train.max_epochs=3", timeout=120,
    )  # fmt: skip
    audit = ["audit", "--before-params", str(before), "--seeds", "0-1", "--output-dir", "out"]
    refused = reprolab(tmp_path, *audit, *small_overrides(tmp_path, 3), check=False)
    assert refused.returncode == 2
    error = refused.stderr.strip()
    assert "\n" not in error and "different datasets" in error and "--allow-dataset-mismatch" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()  # nothing recorded

    allowed = reprolab(tmp_path, *audit, "--allow-dataset-mismatch", "--no-models", *small_overrides(tmp_path, 3))
    assert "**Different datasets**" in (tmp_path / "out/audit.md").read_text(), allowed.stdout
    digests = json.loads((tmp_path / "out/summary.json").read_text())["dataset_digests"]
    assert digests["before"] != digests["after"]
