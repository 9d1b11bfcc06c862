"""Judging a run trained again against its record: identical bits, within a tolerance, within
the configuration's seed-to-seed noise, or differs; the environment difference named first,
and whether each claim made from the run (its target) still holds.
"""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from reprolab.config import TargetConfig, validate
from reprolab.entrypoint import UserError
from reprolab.metrics import HEADLINE, describe_target, has_target, target_met, with_gap
from reprolab.record.environment import difference_groups, environment, environment_differences
from reprolab.reproduce.rebuild import Rebuilt
from reprolab.results import HISTORY_KEYS, RunResult

IDENTICAL, WITHIN_TOLERANCE, WITHIN_NOISE, DIFFERS = "identical", "within tolerance", "within noise", "differs"
STANDING = (IDENTICAL, WITHIN_TOLERANCE, WITHIN_NOISE)  # verdicts under which the result stands
MIN_SEEDS = 3  # runs of a configuration, the original's included, that its seed-to-seed spread needs


@dataclass
class Outcome:
    """One run's reproduction: the numbers that decide its verdict (bits, then the result
    against its configuration's seed-to-seed spread, and the run's claims) and why bits differ."""

    run_id: str
    name: str
    verdict: str  # identical, within tolerance, within noise, differs
    first_difference: Optional[str] = None
    differences: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    altered_code: list[str] = field(default_factory=list)
    reproduction_id: Optional[str] = None
    causes: list[str] = field(default_factory=list)  # why the bits differ, the likeliest first
    noise: dict[str, dict[str, float]] = field(default_factory=dict)  # judged metric -> recorded, now, spread
    seeds: int = 0  # runs of the configuration the spread is measured over
    claims: list[dict[str, Any]] = field(default_factory=list)  # claim, recorded, now
    unjudged: Optional[str] = None  # why the result could not be judged against its noise

    @property
    def stands(self) -> bool:
        return self.verdict in STANDING

    def summary(self) -> str:
        """The verdict in words, made from the numbers above only."""
        text = f"{self.name} ({self.run_id}): "
        broken = [claim["claim"] for claim in self.claims if claim["recorded"] != claim["now"]]
        beyond = [key for key, judged in self.noise.items() if judged["difference"] > judged["spread"]]
        if self.verdict == WITHIN_NOISE:
            largest = max(self.noise, key=lambda key: self.noise[key]["difference"])
            judged = self.noise[largest]
            text += (
                f"differs within noise: the result stands (largest change {largest} {judged['difference']:.4f}, "
                f"seed-to-seed spread {judged['spread']:.4f} over {self.seeds} seeds)"
            )
        elif self.verdict != DIFFERS:
            text += self.verdict
        elif broken:
            text += "differs: " + "; ".join(f"{claim} no longer holds" for claim in broken)
        elif beyond:
            judged = self.noise[beyond[0]]
            text += (
                f"differs: {beyond[0]} changed by {judged['difference']:.4f}, beyond its seed-to-seed spread "
                f"{judged['spread']:.4f} over {self.seeds} seeds: the result does not stand"
            )
        else:
            text += f"differs: {self.unjudged or 'the result does not stand'}"
        if self.verdict != IDENTICAL:
            if self.causes:
                text += f"; cause: {self.causes[0]}" + (
                    f" (+{len(self.causes) - 1} more)" if len(self.causes) > 1 else ""
                )
            else:
                text += "; cause: none recorded (same kernels, libraries, code and data)"
        if self.first_difference:
            text += f"; first difference: {self.first_difference}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "stands": self.stands, "summary": self.summary()}


def _numbers_differ(old: Any, new: Any, tolerance: float) -> bool:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return abs(float(old) - float(new)) > tolerance
    return old != new


def _number_differences(original: RunResult, again: RunResult, tolerance: float) -> list[str]:
    """Per-epoch history first (the first entry is where the two runs part), the fit, then the
    final metrics: each that differs by more than `tolerance`."""
    found: list[str] = []
    for old, new in zip(original.history, again.history):
        for key in HISTORY_KEYS:
            if _numbers_differ(old.get(key), new.get(key), tolerance):
                found.append(f"epoch {int(old['epoch'])}, {key}: {old.get(key)} recorded, {new.get(key)} now")
    if len(original.history) != len(again.history):
        found.append(f"epochs run: {len(original.history)} recorded, {len(again.history)} now")
    for key in ("best_epoch", "epochs_run", "stopped_early"):
        if original.fit.get(key) != again.fit.get(key):
            found.append(f"{key}: {original.fit.get(key)} recorded, {again.fit.get(key)} now")
    for key in sorted(set(original.metrics) | set(again.metrics)):
        if _numbers_differ(original.metrics.get(key), again.metrics.get(key), tolerance):
            found.append(f"{key}: {original.metrics.get(key)} recorded, {again.metrics.get(key)} now")
    return found


def compare(original: RunResult, again: RunResult, tolerance: float = 0.0) -> tuple[str, list[str]]:
    """The verdict, and every difference in order: the numbers (`_number_differences`), then
    predictions and the weights' digest. Within a tolerance, only the numbers are judged."""
    exact = _number_differences(original, again, 0.0)
    for split in sorted(set(original.predictions) | set(again.predictions)):
        old_p, new_p = original.predictions.get(split, []), again.predictions.get(split, [])
        changed = sum(a != b for a, b in zip(old_p, new_p)) + abs(len(old_p) - len(new_p))
        if changed:
            exact.append(f"{split} predictions: {changed} of {len(old_p)} differ")
    if original.weights_sha256 and original.weights_sha256 != again.weights_sha256:
        exact.append(f"weights: digest {original.weights_sha256[:12]}… recorded, {again.weights_sha256[:12]}… now")
    if not exact:
        return IDENTICAL, []
    beyond = _number_differences(original, again, tolerance)
    if tolerance > 0 and not beyond:
        return WITHIN_TOLERANCE, exact
    return DIFFERS, beyond + [d for d in exact if d not in beyond]


def judge(
    rebuilt: Rebuilt, again: dict, tolerance: float, others: Sequence[Any] = ()
) -> tuple[Outcome, RunResult, dict]:
    """The outcome of one reproduction, the new result, and the environment it ran in. Where
    the bits differ, the result is judged against `others`, the runs of its configuration over
    other seeds (`tracking.same_configuration`), and the run's claims are made again."""
    run = rebuilt.run
    result = RunResult.from_json(json.dumps(again["result"]))
    verdict, differences = compare(rebuilt.original, result, tolerance)
    here = environment(again["device"], again.get("kernels"))
    altered = list(again["altered"])
    recorded = run.data.tags.get("reprolab.source.digest")
    if recorded and recorded != again["digest_now"] and not altered:
        altered = ["(the archive's manifest)"]
    groups = difference_groups(rebuilt.environment, here) if rebuilt.environment else None
    outcome = Outcome(
        run.info.run_id,
        run.info.run_name,
        verdict,
        differences[0] if differences else None,
        differences,
        environment_differences(rebuilt.environment, here) if groups is not None else ["not recorded"],
        altered,
    )
    data_differs = result.dataset_digest != rebuilt.original.dataset_digest
    if data_differs:
        outcome.first_difference = (
            f"dataset digest {rebuilt.original.dataset_digest[:12]}… recorded, {result.dataset_digest[:12]}… now"
        )
    if verdict != IDENTICAL:
        groups = groups or {"kernels": ["the run recorded no environment"], "libraries": [], "machine": []}
        outcome.causes = [
            *groups["kernels"],
            *groups["libraries"],
            *(f"code: {name} altered since the run" for name in altered),
            *([f"data: {outcome.first_difference}"] if data_differs else []),
            *groups["machine"],
        ]
    if verdict == DIFFERS:
        _judge_result(outcome, rebuilt, result, others)
    if data_differs:
        outcome.verdict = DIFFERS
    return outcome, result, here


def _target(params: dict) -> Optional[TargetConfig]:
    """The run's target, read by this code's schema (None when it has none, or cannot be read)."""
    try:
        target = validate(copy.deepcopy(params)).data.target
    except UserError:
        return None
    return target if has_target(target) else None


def _judge_result(outcome: Outcome, rebuilt: Rebuilt, again: RunResult, others: Sequence[Any]) -> None:
    """Whether the result stands though its bits differ: each headline metric's change against
    the seed-to-seed spread of its configuration (sample standard deviation over the seeds the
    store holds, this run's included), and each claim (target met or missed, over seeds too)."""
    old, new = with_gap(rebuilt.original.metrics), with_gap(again.metrics)
    seeds = [
        with_gap(run.data.metrics) for run in others if {"train_accuracy", "val_accuracy"} <= set(run.data.metrics)
    ]
    target = _target(rebuilt.params)
    if target is not None:
        met_before, met_now = bool(target_met(old, target)), bool(target_met(new, target))
        outcome.claims.append(
            {
                "claim": f"target {'met' if met_before else 'missed'} ({describe_target(target)})",
                "recorded": met_before,
                "now": met_now,
            }
        )
        if seeds:
            others_met = sum(bool(target_met(metrics, target)) for metrics in seeds)
            outcome.claims.append(
                {
                    "claim": f"target met by {others_met + met_before} of {len(seeds) + 1} seeds",
                    "recorded": others_met + met_before,
                    "now": others_met + met_now,
                }
            )
    outcome.seeds = len(seeds) + 1
    if outcome.seeds < MIN_SEEDS:
        outcome.unjudged = (
            f"cannot judge the noise: the store holds {outcome.seeds} run(s) of this configuration and a spread needs "
            f"{MIN_SEEDS} seeds (reproduce a compare's or an audit's summary run, or record more seeds with "
            f"`reprolab compare --seeds 0-4`)"
        )
    else:
        for key in HEADLINE:
            spread = statistics.stdev([metrics[key] for metrics in seeds] + [old[key]])
            outcome.noise[key] = {
                "recorded": old[key],
                "now": new[key],
                "difference": abs(new[key] - old[key]),
                "spread": spread,
            }
    broken = any(claim["recorded"] != claim["now"] for claim in outcome.claims)
    beyond = any(judged["difference"] > judged["spread"] for judged in outcome.noise.values())
    if outcome.noise and not broken and not beyond:
        outcome.verdict = WITHIN_NOISE
