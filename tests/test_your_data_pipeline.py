"""The README's "Your own data" steps, in a temporary copy of the repository: the pipeline runs on
a user's file, DVC sees a change of its content, and the new runs carry the new digest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import userdata
from conftest import commit, copy_repository, runs, set_in_yaml, sh, shorten_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MINE = """defaults: [npz, _self_]
name: mine
user_file: data/raw/mine.npz
prepared_path: data/prepared/mine.npz
target: {min_val_accuracy: 0.6, max_train_accuracy: null, max_train_inclusive: false}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_repository(tmp_path_factory.mktemp("yours"))
    shorten_pipeline(repo, data=None)
    commit(repo, "short epochs for tests")
    # The README's steps.
    X, y, _ = userdata.series(n=150, classes=4, channels=2, seed=11)
    userdata.save(repo / "data/raw/mine.npz", X=X, y=y)
    sh(repo, "dvc", "add", "data/raw/mine.npz")
    (repo / "conf/data/mine.yaml").write_text(MINE)
    set_in_yaml(repo / "conf/config.yaml", r"^  - data: synthetic", "  - data: mine")
    sh(repo, "reprolab", "compose")
    sh(repo, "dvc", "repro")
    commit(repo, "the pipeline on my data")
    return repo


def digest(repo: Path) -> str:
    return json.loads((repo / "results/data.json").read_text())["digest"]


def test_the_pipeline_runs_on_the_users_file(repo):
    summary = json.loads((repo / "results/data.json").read_text())
    assert summary["name"] == "mine" and summary["num_classes"] == 4 and summary["num_features"] == 2
    train_runs = runs(repo)
    assert len(train_runs) == 4 and {run.info.status for run in train_runs} == {"FINISHED"}
    assert {run.data.tags["reprolab.dataset_digest"] for run in train_runs} == {digest(repo)}
    report = (repo / "reports/comparison.md").read_text()
    assert "Dataset `mine`" in report and "validation accuracy >= 0.6" in report
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def test_replacing_the_files_content_rebuilds_and_records_the_new_digest(repo):
    old = digest(repo)
    X, y, _ = userdata.series(n=150, classes=4, channels=2, seed=12)
    userdata.save(repo / "data/raw/mine.npz", X=X, y=y)
    # DVC lists the stages whose own dependencies changed: the file, and prepare, which reads it.
    status = json.loads(sh(repo, "dvc", "status", "--json").stdout)
    assert set(status) == {"prepare", "data/raw/mine.npz.dvc"}
    known = {run.info.run_id for run in runs(repo)}
    done = sh(repo, "dvc", "repro").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", done))
    presets = ("baseline", "regularized", "lstm", "gru")
    assert {"prepare", "report", "audit", *(f"{s}@{p}" for s in ("train", "evaluate") for p in presets)} <= ran
    new = digest(repo)
    assert new != old
    fresh = [run for run in runs(repo) if run.info.run_id not in known]
    assert len(fresh) == 4 and {run.data.tags["reprolab.dataset_digest"] for run in fresh} == {new}
    for run in fresh:
        assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {new[:36]}
    audit = json.loads((repo / "reports/audit/summary.json").read_text())
    assert audit["dataset_digests"] == {"before": new, "after": new}
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def test_a_stale_choice_of_data_gets_advice_that_keeps_it(repo):
    sh(repo, "reprolab", "compose", "data=synthetic")
    try:
        refused = sh(repo, "dvc", "repro", check=False)
    finally:
        sh(repo, "reprolab", "compose")
    assert refused.returncode != 0
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("reprolab: error:")]
    assert "set `- data: synthetic` in the defaults of conf/config.yaml" in line
    again = sh(repo, "dvc", "repro").stdout  # params.yaml is back: only the check runs again
    assert set(re.findall(r"Running stage '([^']+)'", again)) <= {"check_params"}
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
