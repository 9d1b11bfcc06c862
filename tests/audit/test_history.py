"""The history audit on a small git history: a baseline commit, then one parameter per commit.

The metrics files are written by the test (the walk reads what was committed; training is
tested elsewhere), so the commit where the target first held is known in advance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO_ROOT, sh
from reprolab.audit.history import history_markdown, walk
from reprolab.config import load_config

METRICS = "results/regularized/metrics.json"
TARGET = load_config([], REPO_ROOT / "conf").data.target  # validation >= 0.85, training < 0.92
# The fix applied one change per commit; the preset starts out as the baseline.
STEPS = [
    (
        "baseline settings",
        {
            "model.hidden_size": 128,
            "model.dropout": 0.0,
            "model.output_dropout": 0.0,
            "train.lr": 0.01,
            "train.early_stopping.enabled": False,
        },
        (0.75, 1.00),
    ),
    ("hidden size 32", {"model.hidden_size": 32}, (0.80, 0.97)),
    ("dropout 0.3", {"model.dropout": 0.3, "model.output_dropout": 0.3}, (0.84, 0.93)),
    ("learning rate 0.001", {"train.lr": 0.001}, (0.87, 0.91)),  # the target first holds here
    ("early stopping", {"train.early_stopping.enabled": True}, (0.88, 0.90)),
]


def run(repo: Path, *args: str) -> str:
    return sh(repo, *args).stdout


def write_step(repo: Path, settings: dict, metrics: tuple[float, float]) -> None:
    overrides = [f"experiments.regularized.{key}={value}" for key, value in settings.items()]
    run(repo, "reprolab", "compose", *overrides)
    (repo / METRICS).parent.mkdir(parents=True, exist_ok=True)
    (repo / METRICS).write_text(json.dumps({"val_accuracy": metrics[0], "train_accuracy": metrics[1]}))


@pytest.fixture(scope="module")
def history_repo(tmp_path_factory) -> tuple[Path, list[str]]:
    repo = tmp_path_factory.mktemp("history")
    shutil.copytree(REPO_ROOT / "conf", repo / "conf")
    # Only what the walk reads: params.yaml (DVC's default params file) and the metrics file.
    (repo / "dvc.yaml").write_text(f"metrics:\n  - {METRICS}\n")
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "config", "user.email", "test@reprolab.invalid")
    run(repo, "git", "config", "user.name", "reprolab tests")
    run(repo, "dvc", "init", "-q")
    shas, settings = [], {}
    for message, change, metrics in STEPS:
        # Each commit keeps the previous settings except the ones this step changes back.
        settings.update(change)
        remaining = {key: value for key, value in STEPS[0][1].items() if settings.get(key) == value}
        write_step(repo, remaining, metrics)
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-q", "-m", message)
        shas.append(run(repo, "git", "rev-parse", "HEAD").strip())
    # A DVC experiment on top of the last commit: patience 5, slightly better metrics.
    write_step(repo, {"train.early_stopping.patience": 5}, (0.885, 0.90))
    run(repo, "dvc", "exp", "save", "-n", "patience-5")
    return repo, shas


def test_history_names_the_first_commit_where_the_target_held(history_repo):
    repo, shas = history_repo
    history = walk(repo, "regularized", TARGET, METRICS)
    assert [commit.rev for commit in history.commits] == shas
    assert history.first_held.rev == shas[3] and history.first_held.title == "learning rate 0.001"
    assert [commit.target_held for commit in history.commits] == [False, False, False, True, True]


def test_each_commit_shows_exactly_the_parameter_it_changed(history_repo):
    repo, _ = history_repo
    history = walk(repo, "regularized", TARGET, METRICS)
    changed = [{key for key, _, _ in commit.changes} for commit in history.commits]
    assert changed == [
        set(),
        {"regularized.model.hidden_size"},
        {"regularized.model.dropout", "regularized.model.output_dropout"},
        {"regularized.train.lr"},
        {"regularized.train.early_stopping.enabled"},
    ]
    assert history.commits[3].changes == [("regularized.train.lr", 0.01, 0.001)]
    # The DVC experiment is listed under the commit it is based on, with its own change.
    (experiment,) = history.commits[-1].experiments
    assert experiment.title == "experiment patience-5" and experiment.target_held
    assert experiment.changes == [("regularized.train.early_stopping.patience", 30, 5)]


def test_cli_prints_the_history_as_markdown(history_repo):
    repo, shas = history_repo
    out = run(repo, "reprolab", "audit", "--history", "--output", "history.md")
    assert f"First commit where the target held: `{shas[3][:7]}` (learning rate 0.001)" in out
    assert "| 0.870 (+0.030) | 0.910 (-0.020) | **yes** |" in out
    assert (repo / "history.md").read_text() in out
    markdown = history_markdown(walk(repo, "regularized", TARGET, METRICS), METRICS)
    assert markdown.count("\n| `") == len(shas)
