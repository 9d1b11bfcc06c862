"""The history audit: how the parameters and metrics moved commit by commit, and where the
target first held.

The data is DVC's own: `dvc exp show --json` gives, for each first-parent commit (and each
DVC experiment based on it), the committed params.yaml and metrics files. This module only
diffs consecutive commits and applies the target.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from reprolab.config import TargetConfig, differences, flatten
from reprolab.entrypoint import UserError, one_line
from reprolab.metrics import describe_target, has_target, met_text, target_keys, target_met

PARAMS_FILE = "params.yaml"
SHOWN_PREFIXES = ("data.", "seed")


class HistoryError(UserError, RuntimeError):
    """The repository's history cannot be read."""


@dataclass
class Revision:
    """One commit (or DVC experiment) with its parameters and the audited preset's metrics."""

    rev: str
    title: str  # the commit subject, or the experiment's name
    params: dict[str, Any]
    metrics: Optional[dict[str, Any]]
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    other_changes: int = 0
    target_held: Optional[bool] = None
    experiments: list[Revision] = field(default_factory=list)


@dataclass
class History:
    """The walk, oldest commit first, and the first commit where the target held."""

    preset: str
    target: TargetConfig
    commits: list[Revision]
    first_held: Optional[Revision]


def _run(args: list[str], repo: Path) -> str:
    try:
        done = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as error:
        raise HistoryError(
            f"history: `{' '.join(args[-6:])}` took longer than {error.timeout:.0f} s in {repo}"
        ) from None
    except OSError as error:
        raise HistoryError(f"history: cannot run {args[0]} ({one_line(error)})") from error
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise HistoryError(f"history: `{' '.join(args[-6:])}` failed in {repo}: {last}")
    return done.stdout


def exp_show(repo: Path, rev: str = "HEAD") -> list[dict]:
    """DVC's `exp show --json` for every first-parent commit up to `rev`, newest first."""
    output = _run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--num", "-1", "--rev", rev], repo)
    return json.loads(output)


def _subjects(repo: Path, rev: str) -> dict[str, str]:
    lines = _run(["git", "log", "--first-parent", "--format=%H%x09%s", rev], repo).splitlines()
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def _revision(entry: dict, title: str, metrics_file: str) -> Revision:
    data = entry.get("data") or {}
    params = (data.get("params") or {}).get(PARAMS_FILE, {}).get("data", {})
    metrics = (data.get("metrics") or {}).get(metrics_file, {}).get("data")
    return Revision(rev=entry["rev"], title=title, params=flatten(params), metrics=metrics)


def _diff(revision: Revision, previous: Optional[Revision], preset: str) -> None:
    """Set the revision's parameter changes: the preset's own keys, data and seed by name;
    other keys (other presets, the audit settings) only counted."""
    if previous is None:
        return
    own = f"experiments.{preset}."
    for key, before, after in sorted(differences(previous.params, revision.params)):
        if key.endswith(".description"):
            continue
        if key.startswith(own) or key.startswith(SHOWN_PREFIXES):
            revision.changes.append((key.replace(own, f"{preset}.", 1), before, after))
        else:
            revision.other_changes += 1


def _held(metrics: Optional[dict], target: TargetConfig) -> Optional[bool]:
    if not metrics or any(key not in metrics for key in target_keys(target)):
        return None
    return target_met(metrics, target)


def walk(repo: Path, preset: str, target: TargetConfig, metrics_file: str, rev: str = "HEAD") -> History:
    """Every first-parent commit up to `rev`, oldest first, diffed against its parent, with
    DVC experiments under the commit they are based on."""
    entries = [entry for entry in exp_show(repo, rev) if entry.get("rev") != "workspace"]
    subjects = _subjects(repo, rev)
    commits: list[Revision] = []
    for entry in reversed(entries):
        commit = _revision(entry, subjects.get(entry["rev"], entry.get("name") or ""), metrics_file)
        _diff(commit, commits[-1] if commits else None, preset)
        commit.target_held = _held(commit.metrics, target)
        for group in entry.get("experiments") or []:
            for exp in group.get("revs", [])[:1]:
                experiment = _revision(exp, f"experiment {exp.get('name') or exp['rev'][:7]}", metrics_file)
                _diff(experiment, commit, preset)
                experiment.target_held = _held(experiment.metrics, target)
                commit.experiments.append(experiment)
        commits.append(commit)
    first = next((commit for commit in commits if commit.target_held), None)
    return History(preset, target, commits, first)


def _moved(commit: Revision, previous: Optional[Revision]) -> bool:
    """Whether a commit changed any parameter or the audited metrics."""
    keys = ("val_accuracy", "train_accuracy")
    before = {k: (previous.metrics or {}).get(k) for k in keys} if previous else {}
    return bool(commit.changes or commit.other_changes) or before != {k: (commit.metrics or {}).get(k) for k in keys}


def _metric_cell(revision: Revision, previous: Optional[Revision], key: str) -> str:
    if not revision.metrics or key not in revision.metrics:
        return "-"
    value = revision.metrics[key]
    if previous and previous.metrics and key in previous.metrics:
        return f"{value:.3f} ({value - previous.metrics[key]:+.3f})"
    return f"{value:.3f}"


def _changes_cell(revision: Revision, first: bool) -> str:
    if first:
        return "(first commit)"
    parts = [f"`{key}`: {old} → {new}" for key, old, new in revision.changes]
    if revision.other_changes:
        parts.append(f"{revision.other_changes} other keys")
    return "; ".join(parts) or "none"


def history_markdown(history: History, metrics_file: str) -> str:
    """The walk as a Markdown table and a closing line naming the first commit that held."""
    target = history.target
    lines = [
        f"# Parameter and metric history: `{history.preset}`",
        "",
        f"From `dvc exp show --json` over the first-parent history: `{PARAMS_FILE}` and `{metrics_file}` "
        f"as committed. Target: {describe_target(target)}.",
        "",
        "| commit | message | parameter changes | val acc | train acc | target held |",
        "|---|---|---|---|---|---|",
    ]
    previous: Optional[Revision] = None
    hidden = 0
    for index, commit in enumerate(history.commits):
        if index and commit is not history.first_held and not commit.experiments and not _moved(commit, previous):
            hidden += 1
            previous = commit
            continue
        rows = [(commit, previous, f"`{commit.rev[:7]}`")]
        rows += [(exp, commit, f"↳ `{exp.rev[:7]}`") for exp in commit.experiments]
        for revision, base, name in rows:
            held = "**yes**" if revision.target_held else met_text(revision.target_held)
            title = revision.title if len(revision.title) <= 72 else revision.title[:71] + "…"
            lines.append(
                f"| {name} | {title} | {_changes_cell(revision, index == 0 and base is None)} | "
                f"{_metric_cell(revision, base, 'val_accuracy')} | "
                f"{_metric_cell(revision, base, 'train_accuracy')} | {held} |"
            )
        previous = commit
    if hidden:
        lines.append(f"\n{hidden} commits that changed neither the parameters nor these metrics are not shown.")
    lines.append("")
    if history.first_held and history.first_held.metrics:
        first, metrics = history.first_held, history.first_held.metrics
        lines.append(
            f"**First commit where the target held: `{first.rev[:7]}` ({first.title})**, "
            f"validation {metrics['val_accuracy']:.3f}, training {metrics['train_accuracy']:.3f}."
        )
    elif not has_target(target):
        lines.append("**No target is set (data.target), so no commit is said to hold one.**")
    else:
        lines.append("**The target did not hold at any commit.**")
    lines.append("")
    return "\n".join(lines)
