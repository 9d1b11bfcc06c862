"""Audit building blocks: which changes separate two presets, the ablation variants, intervals.

Groundwork for the audit (issue 4): pure functions, tested, not yet wired into the CLI or DVC.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from omegaconf import OmegaConf

from reprolab.config import ExperimentConfig, flatten, to_dict

# Keys that make one change together: the first matching prefix names the group.
CHANGE_GROUPS = (
    ("train.early_stopping.", "early stopping"),
    ("model.dropout", "dropout"),
    ("model.output_dropout", "dropout"),
)
IGNORED_KEYS = ("description",)


@dataclass
class Change:
    """One logical change: its name and, per key, the (before, after) values."""

    name: str
    values: dict[str, tuple[Any, Any]]


def _flat(preset: ExperimentConfig) -> dict[str, Any]:
    return {key: value for key, value in flatten(to_dict(preset)).items() if key not in IGNORED_KEYS}


def _group(key: str) -> str:
    return next((name for prefix, name in CHANGE_GROUPS if key.startswith(prefix)), key)


def derive_changes(before: ExperimentConfig, after: ExperimentConfig) -> list[Change]:
    """Every differing key between two presets, related keys grouped, in config order.

    Inside a group, only keys that differ are listed, but applying the change sets the whole
    group's differing keys together (e.g. early stopping's enabled flag with its patience).
    """
    old, new = _flat(before), _flat(after)
    changes: dict[str, Change] = {}
    for key in new:
        if old.get(key) != new[key]:
            name = _group(key)
            changes.setdefault(name, Change(name, {})).values[key] = (old.get(key), new[key])
    return list(changes.values())


def apply_changes(preset: ExperimentConfig, changes: Sequence[Change], side: str) -> ExperimentConfig:
    """A copy of `preset` with each change's keys set to their `side` ("before"/"after") values."""
    index = {"before": 0, "after": 1}[side]
    node = OmegaConf.structured(copy.deepcopy(preset))
    for change in changes:
        for key, values in change.values.items():
            OmegaConf.update(node, key, values[index])
    return OmegaConf.to_object(node)


def ablation_variants(before: ExperimentConfig, after: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """before, after, before + each change alone, after - each change alone."""
    changes = derive_changes(before, after)
    variants = {"before": before, "after": after}
    for change in changes:
        variants[f"before + {change.name}"] = apply_changes(before, [change], "after")
        variants[f"after - {change.name}"] = apply_changes(after, [change], "before")
    return variants


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval across seeds: (mean, low, high)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half
