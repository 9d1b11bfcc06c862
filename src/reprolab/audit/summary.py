"""The audit's numbers as files and metrics: `summary.json`, a row of `runs.csv` per run, and
the attribution's metrics logged to the audit's summary run.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from reprolab.audit.attribution import Attribution
from reprolab.audit.design import AFTER, BEFORE
from reprolab.audit.measure import Interval
from reprolab.audit.verdict import AuditSummary
from reprolab.config import FoldConfig
from reprolab.results import RunResult


def run_row(result: RunResult, run_id: Optional[str], reused: bool, fold: Optional[FoldConfig] = None) -> dict:
    return {
        "configuration": result.preset,
        "seed": result.seed,
        **({"fold": fold.index} if fold else {}),
        **{key: result.metrics[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy")},
        "best_epoch": result.fit["best_epoch"],
        "epochs_run": result.fit["epochs_run"],
        "dataset_digest": result.dataset_digest,
        "mlflow_run_id": run_id or "",
        "reused": reused,
    }


def _stats(values: dict[str, Interval]) -> dict:
    return {key: dataclasses.asdict(interval) for key, interval in values.items()}


def _attribution_json(attribution: Attribution) -> dict:
    return {
        "total": dataclasses.asdict(attribution.total),
        "changes": {name: {"shapley": dataclasses.asdict(share)} for name, share in attribution.shares.items()},
        "interactions": {
            " x ".join(pair): dataclasses.asdict(value) for pair, value in attribution.interactions.items()
        },
        "sum_error": attribution.sum_error,
        "lead": None
        if attribution.lead is None
        else {
            "largest": attribution.lead.largest,
            "next": attribution.lead.next,
            "size_difference": dataclasses.asdict(attribution.lead.size_difference),
        },
    }


def summary_json(summary: AuditSummary, audit_id: str, reused: int) -> dict:
    return {
        "audit_id": audit_id,
        "before": summary.before,
        "after": summary.after,
        "seeds": summary.seeds,
        "confidence": summary.confidence,
        "resampling": summary.resampling,
        "dataset_digests": summary.dataset_digests,
        "split_sizes": summary.split_sizes,
        "runs_reused": reused,
        "verdict": summary.verdict,
        "warnings": summary.warnings,
        "before_overfits": summary.gap_before,
        "attribution": {key: _attribution_json(value) for key, value in summary.attribution.items()},
        "greedy_path": [
            {"added": step.change, "configuration": step.label, "holds": step.holds, **_stats(step.stats)}
            for step in summary.path
        ],
        "configurations": {
            label: {
                # null with no target: nothing holds or fails
                "holds": check.holds,
                "seeds_met": check.seeds_met if check.targeted else None,
                "intervals_clear": check.interval_clears if check.targeted else None,
                "missed": check.missed,
                **_stats(check.stats),
            }
            for label, check in summary.variants.items()
        },
        "changes": {
            effect.change.name: {
                "needed": effect.needed,
                "sufficient": effect.sufficient,
                "keys": {key: list(pair) for key, pair in effect.change.values.items()},
                "alone": _stats(effect.alone),
                "in_after": _stats(effect.in_after),
                "shapley": _stats(effect.shapley),
            }
            for effect in summary.effects
        },
    }


SHARED_METRICS = ("val_accuracy", "train_val_gap")  # the attribution's metrics logged to the summary run


def summary_metrics(summary: AuditSummary) -> dict[str, float]:
    """Headline numbers for the MLflow summary run: before's and after's mean accuracies, and
    each change's Shapley share of the validation accuracy and gap changes with its interval
    (`shapley/<change>/<metric>`, `.../low`, `.../high`). Few, so that the UI's chart view is
    not flooded; summary.json holds the rest."""
    metrics = {
        f"{label}/{key}": summary.variants[label].stats[key].mean
        for label in (BEFORE, AFTER)
        for key in ("val_accuracy", "train_accuracy")
    }
    for key in SHARED_METRICS:
        attribution = summary.attribution[key]
        for name, interval in [("total", attribution.total), *attribution.shares.items()]:
            metrics[f"shapley/{name}/{key}"] = interval.mean
            metrics[f"shapley/{name}/{key}/low"] = interval.low
            metrics[f"shapley/{name}/{key}/high"] = interval.high
    return metrics
