"""The audit's design: which changes separate two presets (grouped by section beyond
MAX_CHANGES), and the configurations to train, one per coalition of changes.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf

from reprolab.config import ExperimentConfig, differences, to_dict

# Keys that make one change together: the first matching prefix names the group.
CHANGE_GROUPS = (
    ("train.early_stopping.", "early stopping"),
    ("model.dropout", "dropout"),
    ("model.output_dropout", "dropout"),
    ("model.hidden_size", "hidden size"),
    ("train.lr", "learning rate"),
)


IGNORED_KEYS = ("description",)


# Beyond MAX_CHANGES changes, one change per section of the preset.
SECTION_NAMES = {"model": "model settings", "train": "training settings"}


@dataclass
class Change:
    """One logical change: its name and, per key, the (before, after) values; `merged` names the
    changes it stands for when there were too many to audit one by one (else empty)."""

    name: str
    values: dict[str, tuple[Any, Any]]
    merged: list[str] = field(default_factory=list)


def _plain(preset: ExperimentConfig) -> dict[str, Any]:
    return {key: value for key, value in to_dict(preset).items() if key not in IGNORED_KEYS}


def _group(key: str) -> str:
    return next((name for prefix, name in CHANGE_GROUPS if key.startswith(prefix)), key)


def derive_changes(before: ExperimentConfig, after: ExperimentConfig, room: Optional[int] = None) -> list[Change]:
    """Every differing key between two presets, related keys grouped, in config order.

    Inside a group, only keys that differ are listed, but applying the change sets the whole
    group's differing keys together (e.g. early stopping's enabled flag with its patience).
    More than `room` (default MAX_CHANGES) changes are grouped by section (`by_section`).
    """
    changes: dict[str, Change] = {}
    for key, old, new in differences(_plain(before), _plain(after)):
        name = _group(key)
        changes.setdefault(name, Change(name, {})).values[key] = (old, new)
    fits = len(changes) <= (MAX_CHANGES if room is None else room)
    return list(changes.values()) if fits else by_section(list(changes.values()))


CODE = "training code"  # a change of the code that trains, between runs made by different code


def code_change(before: str, after: str, module: str) -> Change:
    """The training code as one more change, between the codes named `before` and `after`
    (`module` is the module whose import closure is the training code)."""
    return Change(CODE, {module: (before, after)})


def by_section(changes: Sequence[Change]) -> list[Change]:
    """One change per section of the preset ("model settings", "training settings"), each
    standing for the changes whose keys lie there: all 2^k combinations of more than
    MAX_CHANGES changes are too many to train, and a group's share is still exact."""
    grouped: dict[str, Change] = {}
    for change in changes:
        for key, values in change.values.items():
            section = key.split(".")[0]
            name = SECTION_NAMES.get(section, section)
            group = grouped.setdefault(name, Change(name, {}))
            group.values[key] = values
            if change.name not in group.merged:
                group.merged.append(change.name)
    return list(grouped.values())


def apply_changes(preset: ExperimentConfig, changes: Sequence[Change], side: str) -> ExperimentConfig:
    """A copy of `preset` with each change's keys set to their `side` ("before"/"after") values
    (the training code is no key of a preset: which code trains is the caller's)."""
    index = {"before": 0, "after": 1}[side]
    node = OmegaConf.structured(copy.deepcopy(preset))
    for change in changes:
        if change.name == CODE:
            continue
        for key, values in change.values.items():
            OmegaConf.update(node, key, values[index])
    changed = OmegaConf.to_object(node)
    assert isinstance(changed, ExperimentConfig)
    return changed


BEFORE, AFTER = "before", "after"


def side_of(label: str) -> str:
    """The side whose data and code a configuration trains on: before's for "before" and
    "before + <change>", after's for the others."""
    return BEFORE if label.startswith(BEFORE) else AFTER


def added_label(change: Change) -> str:
    return f"{BEFORE} + {change.name}"


def removed_label(change: Change) -> str:
    return f"{AFTER} - {change.name}"


MAX_CHANGES = 6  # 2^6 = 64 configurations per seed: beyond that, changes are grouped by section


def coalition_label(changes: Sequence[Change], names: frozenset[str]) -> str:
    """The configuration that applies the changes in `names` to before: "before", "after",
    "before + X" (one change), "after - X" (all but one), else "before + X + Y"."""
    if not names:
        return BEFORE
    if len(names) == len(changes):
        return AFTER
    if len(names) == 1:
        return added_label(next(c for c in changes if c.name in names))
    if len(names) == len(changes) - 1:
        return removed_label(next(c for c in changes if c.name not in names))
    return " + ".join([BEFORE] + [c.name for c in changes if c.name in names])


def coalitions(changes: Sequence[Change]) -> dict[frozenset[str], str]:
    """Every subset of the changes (2^k), smallest first, with its configuration's label."""
    names = [change.name for change in changes]
    subsets = [frozenset(chosen) for size in range(len(names) + 1) for chosen in itertools.combinations(names, size)]
    return {subset: coalition_label(changes, subset) for subset in subsets}


def ablation_variants(before: ExperimentConfig, after: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """Every combination of the changes applied to before (2^k configurations, before and after
    among them), by label. Labels starting with "before" train on the before side's data, the
    others on the after's."""
    changes = derive_changes(before, after)
    return {
        label: apply_changes(before, [c for c in changes if c.name in subset], "after")
        for subset, label in coalitions(changes).items()
    }


def grouping_warnings(changes: Sequence[Change]) -> list[str]:
    """What grouping the changes by section (`by_section`) hides."""
    groups = [change for change in changes if change.merged]
    if not groups:
        return []
    count = sum(len(change.merged) for change in groups)  # by_section groups every change
    return [
        f"{count} changes are more than the {MAX_CHANGES} whose every combination the audit trains, so they are "
        f"grouped by section: "
        + "; ".join(f"{change.name} ({', '.join(change.merged)})" for change in groups)
        + ". A group's share is that of its changes together. For each change's own share, audit in steps "
        f"through an intermediate preset, at most {MAX_CHANGES} changes apart."
    ]
