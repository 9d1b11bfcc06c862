"""The audit's conclusion: every configuration checked, each change measured and the
difference attributed (`summarize`), and the verdict sentences, which claim nothing that
the intervals do not support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from reprolab.audit.attribution import Attribution, ChangeEffect, PathStep, attribution_of, greedy_path, shapley_terms
from reprolab.audit.checks import NEGATED, VariantCheck, check_variant
from reprolab.audit.design import AFTER, BEFORE, Change, coalitions, grouping_warnings, side_of
from reprolab.audit.measure import (
    DIFFERENCE,
    METRICS,
    SMALL_SPLIT,
    Bootstrap,
    Interval,
    Labels,
    Pooled,
    combine,
    level_bounds,
)
from reprolab.config import TargetConfig
from reprolab.metrics import has_target, target_keys, target_words
from reprolab.results import RunResult


@dataclass
class AuditSummary:
    """Everything the audit concludes, as values for the report, the JSON metrics and MLflow."""

    before: str
    after: str
    seeds: list[int]
    confidence: float
    target: TargetConfig
    dataset_digests: dict[str, str]
    split_sizes: dict[str, int]  # of the after side's dataset
    variants: dict[str, VariantCheck]
    effects: list[ChangeEffect]
    attribution: dict[str, Attribution]
    path: list[PathStep]
    gap_before: bool  # the before side overfits: its train-val gap is above 0 beyond noise
    warnings: list[str]
    verdict: str
    resampling: dict  # how it measured (`kfold.resampling`)


def summarize(
    results: Sequence[RunResult | Pooled],
    changes: Sequence[Change],
    before: str,
    after: str,
    target: TargetConfig,
    confidence: float,
    dataset_digests: dict[str, str],
    labels: dict[str, Labels],
    resampling: Optional[dict] = None,
) -> AuditSummary:
    """Check every configuration against the target, measure each change's effect and split
    the before -> after difference into the changes' Shapley values.

    `labels` holds each side's true classes per split ("before", "after"): configurations whose
    label starts with "before" were trained on the before side's data, the others on the after's.
    With k-fold (`resampling`), `results` are each configuration's fold runs pooled per seed."""
    by_label: dict[str, list[RunResult | Pooled]] = {}
    for result in sorted(results, key=lambda r: r.seed):
        by_label.setdefault(result.preset, []).append(result)
    seeds = [run.seed for run in by_label[AFTER]]
    for label, runs in by_label.items():
        if [run.seed for run in runs] != seeds:
            raise ValueError(f"{label} ran seeds {[run.seed for run in runs]}, {AFTER} ran {seeds}")
    sizes = {
        side: {split: len(values) for split, values in side_labels.items()} for side, side_labels in labels.items()
    }
    resamples = Bootstrap.resamples_for([n for side in sizes.values() for n in side.values()])
    bootstrap = {side: Bootstrap(len(seeds), side_sizes, resamples) for side, side_sizes in sizes.items()}

    measures = {
        label: bootstrap[side_of(label)].measure(runs, labels[side_of(label)], label)
        for label, runs in by_label.items()
    }
    interval = bootstrap[AFTER].interval

    def stats(terms: Sequence[tuple[float, str]]) -> dict[str, Interval]:
        combined = combine([(weight, measures[label]) for weight, label in terms])
        return {key: interval(value, confidence, DIFFERENCE) for key, value in combined.items()}

    variants = {
        label: check_variant(
            label,
            by_label[label],
            {key: interval(m, confidence, level_bounds(key)) for key, m in measures[label].items()},
            target,
        )
        for label in by_label
    }
    targeted = has_target(target)
    after_holds = variants[AFTER].holds
    named = coalitions(changes)
    everything = frozenset(change.name for change in changes)
    names = [change.name for change in changes]

    def shapley(name: str) -> list[tuple[float, str]]:
        return [(weight, named[subset]) for weight, subset in shapley_terms(names, name)]

    effects = [
        ChangeEffect(
            change=change,
            alone=stats([(1, named[frozenset({change.name})]), (-1, BEFORE)]),
            in_after=stats([(1, AFTER), (-1, named[everything - {change.name}])]),
            shapley=stats(shapley(change.name)),
            needed=NEGATED[variants[named[everything - {change.name}]].judged()] if targeted and after_holds else "n/a",
            sufficient=variants[named[frozenset({change.name})]].judged() if targeted else "n/a",
        )
        for change in changes
    ]
    attribution = {key: attribution_of(key, measures, changes, named, interval, confidence) for key in METRICS}
    summary = AuditSummary(
        before,
        after,
        seeds,
        confidence,
        target,
        dataset_digests,
        sizes[AFTER],
        variants,
        effects,
        attribution,
        greedy_path(changes, variants, named, target),
        gap_before=variants[BEFORE].stats["train_val_gap"].low > 0,
        warnings=[],
        verdict="",
        resampling=resampling or {"method": "holdout"},
    )
    summary.verdict = verdict(summary)
    summary.warnings = grouping_warnings(changes) + small_split_warnings(summary)
    return summary


def _names(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _shares_text(attribution: Attribution) -> str:
    ranked = sorted(attribution.shares.items(), key=lambda item: abs(item[1].mean), reverse=True)
    return ", ".join(f"{name} {share.text(signed=True)}" for name, share in ranked)


def verdict(summary: AuditSummary) -> str:
    """The audit's answer in a few sentences: whether there was a gap, whether after meets the
    target, and which changes moved the metrics, by their Shapley shares. Nothing is claimed
    that the intervals do not support."""
    after, before = summary.variants[AFTER], summary.variants[BEFORE]
    n = len(summary.seeds)
    key = target_keys(summary.target)[0]  # validation accuracy, or balanced accuracy if the target names it
    words = target_words(summary.target)
    val = summary.attribution[key]
    gap = summary.attribution["train_val_gap"]
    sentences = []
    if not summary.gap_before:
        sentences.append(
            f"{summary.before} does not overfit beyond noise (train-val gap "
            f"{before.stats['train_val_gap'].text(signed=True)}), so there was no gap to close"
        )
    if not has_target(summary.target):
        sentences.append("No target is set (data.target), so nothing is said about meeting one")
    elif not after.holds:
        sentences.append(
            f"{summary.after} does not meet the target robustly ({after.seeds_met}/{n} seeds, validation "
            f"{words} {after.stats[key].text()}; missed: {'; '.join(after.missed[:3])}), so no "
            f"change can be credited with meeting it"
        )
    else:
        sentences.append(
            f"{summary.after} meets the target on {n}/{n} seeds (validation {words} {after.stats[key].text()} vs "
            f"{before.stats[key].text()} for {summary.before})"
        )
        sentences += _needed_and_sufficient(summary.effects)
    sentences.append(
        f"From {summary.before} to {summary.after}, validation {words} moves by {val.total.text(signed=True)} "
        f"and the train-val gap by {gap.total.text(signed=True)}; the Shapley shares of the validation change "
        f"(they add up to it): {_shares_text(val)}"
    )
    sentences.append(_largest_share(val))
    sizes = summary.split_sizes
    if sizes["val"] < SMALL_SPLIT and sizes["test"] > sizes["val"]:
        test = summary.attribution[key.replace("val_", "test_", 1)]
        sentences.append(
            f"these rest on {sizes['val']} validation sequences; on the {sizes['test']} test sequences, test "
            f"{words} moves by {test.total.text(signed=True)}, with shares {_shares_text(test)}"
        )
    return ". ".join(sentence[0].upper() + sentence[1:] for sentence in sentences) + "."


def _largest_share(attribution: Attribution) -> str:
    """Which change has the largest share, named only where the intervals support it: its share
    can be told from chance, and so can its lead over the next largest share."""
    told = [name for name, share in attribution.shares.items() if not share.contains(0.0)]
    lead = attribution.lead
    if not told:
        return "no change's share can be told from chance with these seeds and sequences"
    if lead is None:
        return f"{told[0]} has the largest share that can be told from chance"
    if lead.largest not in told:
        have = "has a share" if len(told) == 1 else "have shares"
        return f"{_names(told)} {have} that can be told from chance, but {lead.largest}'s larger share cannot"
    if lead.clear:
        return f"{lead.largest} has the largest share that can be told from chance"
    return (
        f"{lead.largest}'s share can be told from chance but not from {lead.next}'s, the next largest (the "
        f"difference of their sizes is {lead.size_difference.text(signed=True)}), so neither is named the largest"
    )


def _needed_and_sufficient(effects: Sequence[ChangeEffect]) -> list[str]:
    """What the intervals say about needing each change, and about each being enough alone."""
    needed = [e.change.name for e in effects if e.needed == "yes"]
    unneeded = [e.change.name for e in effects if e.needed == "no"]
    unclear = [e.change.name for e in effects if e.needed == "cannot tell"]
    sufficient = [e.change.name for e in effects if e.sufficient == "yes"]
    sentences = []
    if needed:
        sentences.append(
            f"without {_names(needed)} it misses the target: {'it is' if len(needed) == 1 else 'each is'} needed"
        )
    if unneeded:
        one = len(unneeded) == 1
        sentences.append(
            f"{_names(unneeded)} {'is' if one else 'are'} not needed "
            f"(the target holds without {'it' if one else 'each'})"
        )
    if unclear:
        sentences.append(
            f"whether {_names(unclear)} {'is' if len(unclear) == 1 else 'are'} needed, the intervals cannot tell"
        )
    sentences.append(
        f"{_names(sufficient)} alone {'is' if len(sufficient) == 1 else 'are each'} enough"
        if sufficient
        else "no change is enough on its own"
    )
    return sentences


def small_split_warnings(summary: AuditSummary) -> list[str]:
    """Where the evidence is too thin for what the audit claims: a split so small that one
    sequence moves an accuracy by more than 0.01, or too few seeds."""
    warnings = []
    n_val = summary.split_sizes["val"]
    if n_val < SMALL_SPLIT:
        after = summary.variants[AFTER].stats["val_accuracy"]
        kfold = summary.resampling["method"] == "kfold"
        held = "training and validation splits pooled have" if kfold else "validation split has"
        remedy = (
            "More data narrows them."
            if kfold
            else (
                "A larger validation split (more data, or a larger data.val_fraction), or k-fold over training and "
                "validation (audit.resampling=kfold), narrows them."
            )
        )
        warnings.append(
            f"The {held} only {n_val} sequences: one sequence moves validation accuracy by "
            f"{1 / n_val:.3f}, and the interval of {summary.after}'s validation accuracy is "
            f"{after.low:.3f}-{after.high:.3f}; effects smaller than that cannot be told from chance. {remedy}"
        )
    if len(summary.seeds) < 3:
        warnings.append(
            f"Only {len(summary.seeds)} seeds: their spread is barely estimated (Student's t with 1 degree of "
            f"freedom), so the intervals are wide. 3-5 seeds (--seeds 0-4) narrow them."
        )
    return warnings
