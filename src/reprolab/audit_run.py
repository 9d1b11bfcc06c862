"""Running an audit: train every ablation variant for every seed, record each run in MLflow
under the audit's summary run, and write the report (all files or none)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from reprolab import audit, plots, tracking
from reprolab import data as datasets
from reprolab.audit_report import FIGURES, audit_markdown, summed_confusion
from reprolab.config import Config, ConfigError, TrackingConfig, load_params
from reprolab.files import atomic_directory, write_csv
from reprolab.jobs import Job
from reprolab.metrics import meets_target
from reprolab.plots import preset_colour
from reprolab.results import RunResult
from reprolab.sweep import run_sweep


@dataclasses.dataclass
class AuditSide:
    """One side of an audit: a preset of a config, and that config's checked dataset."""

    preset: str
    config: Config
    data: datasets.Dataset
    source: str  # where the config came from, for messages


def side_from(
    config: Config, data: datasets.Dataset, preset: str, params_file: Optional[str], scratch: Path, label: str
) -> AuditSide:
    """One side of an audit: a preset of the composed config, or of another resolved params file
    (e.g. `git show v1:params.yaml > old.yaml`), whose dataset is then built and checked."""
    if params_file is None:
        config.preset(preset)
        return AuditSide(preset, config, data, "conf/")
    side = load_params(params_file)
    side.preset(preset)
    if side.data == config.data:
        return AuditSide(preset, side, data, params_file)
    side_data = dataclasses.replace(side.data, prepared_path=str(scratch / f"{label}.npz"))
    side = dataclasses.replace(side, data=side_data)
    return AuditSide(preset, side, datasets.build(side_data), params_file)


def _check_same_data(before: AuditSide, after: AuditSide, allow_mismatch: bool) -> None:
    if before.data.digest != after.data.digest and not allow_mismatch:
        raise datasets.DataError(
            f"audit: the two sides use different datasets: before ({before.source}) has digest "
            f"{before.data.digest[:12]}…, after ({after.source}) has {after.data.digest[:12]}…; "
            f"an audit compares changes on one dataset. Use the same data config on both sides, or "
            f"pass --allow-dataset-mismatch to compare anyway (the report then says so)"
        )


def _jobs(
    before: AuditSide, after: AuditSide, seeds: Sequence[int], audit_id: str, tracking_config: TrackingConfig
) -> tuple[list[audit.Change], list[Job]]:
    """The changes, and one job per (variant, seed) on its side's data."""
    old, new = before.config.preset(before.preset), after.config.preset(after.preset)
    changes = audit.derive_changes(old, new)
    if not changes:
        raise ConfigError(
            f"audit: {before.preset} and {after.preset} have the same model and training; there is nothing to audit"
        )
    jobs = []
    for label, variant in audit.ablation_variants(old, new).items():
        side = before if label.startswith(audit.BEFORE) else after
        variant = dataclasses.replace(
            variant, description=f"audit {audit_id}: {label} ({before.preset} -> {after.preset})"
        )
        config = dataclasses.replace(
            side.config, experiments={label: variant}, experiment=label, tracking=tracking_config
        )
        jobs += [Job(config, label, seed, side.data) for seed in seeds]
    return changes, jobs


def _run_row(result: RunResult, run_id: Optional[str], reused: bool) -> dict:
    return {
        "configuration": result.preset,
        "seed": result.seed,
        **{key: result.metrics[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy")},
        "best_epoch": result.fit["best_epoch"],
        "epochs_run": result.fit["epochs_run"],
        "dataset_digest": result.dataset_digest,
        "mlflow_run_id": run_id or "",
        "reused": reused,
    }


def _summary_json(summary: audit.AuditSummary, audit_id: str, reused: int) -> dict:
    def stats(values: dict[str, audit.Interval]) -> dict:
        return {key: dataclasses.asdict(interval) for key, interval in values.items()}

    return {
        "audit_id": audit_id,
        "before": summary.before,
        "after": summary.after,
        "seeds": summary.seeds,
        "confidence": summary.confidence,
        "dataset_digests": summary.dataset_digests,
        "split_sizes": summary.split_sizes,
        "runs_reused": reused,
        "verdict": summary.verdict,
        "warnings": summary.warnings,
        "configurations": {
            label: {
                "holds": check.holds,
                "seeds_met": check.seeds_met,
                "intervals_clear": check.interval_clears,
                "missed": check.missed,
                **stats(check.stats),
            }
            for label, check in summary.variants.items()
        },
        "changes": {
            effect.change.name: {
                "needed": effect.needed,
                "sufficient": effect.sufficient,
                "keys": {key: list(pair) for key, pair in effect.change.values.items()},
                "alone": stats(effect.alone),
                "in_after": stats(effect.in_after),
            }
            for effect in summary.effects
        },
    }


def _summary_metrics(summary: audit.AuditSummary) -> dict[str, float]:
    """Headline numbers for the MLflow summary run: before's and after's mean accuracies and
    each change's effect on validation accuracy within after. Few, so that the UI's chart view
    is not flooded; summary.json holds the rest."""
    metrics = {
        f"{label}/{key}": summary.variants[label].stats[key].mean
        for label in (audit.BEFORE, audit.AFTER)
        for key in ("val_accuracy", "train_accuracy")
    }
    for effect in summary.effects:
        metrics[f"effect/{effect.change.name}/val_accuracy"] = effect.in_after["val_accuracy"].mean
    return metrics


def run_audit(
    config: Config,
    before: AuditSide,
    after: AuditSide,
    seeds: Sequence[int],
    output_dir: Path,
    workers: Optional[int] = None,
    allow_dataset_mismatch: bool = False,
    log_models: bool = True,
    scheduler: Optional[str] = None,
    reuse: bool = True,
) -> tuple[audit.AuditSummary, str]:
    """Train before, after, before + each change and after - each change for every seed (on
    local processes, or the Dask cluster at `scheduler`), reusing finished runs with the same
    run key; record each new run in MLflow as it finishes, nested under the audit's summary run;
    write the report into `output_dir` (all files or none) and attach it to the summary run.
    Returns the summary and the Markdown."""
    if len(set(seeds)) < 2:
        raise ConfigError(f"audit: needs at least 2 different seeds for an interval, got {list(seeds)}")
    _check_same_data(before, after, allow_dataset_mismatch)
    audit_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    changes, jobs = _jobs(before, after, seeds, audit_id, config.tracking)
    print(
        f"audit {audit_id}: {before.preset} -> {after.preset}, {len(changes)} changes "
        f"({', '.join(c.name for c in changes)}), {len(jobs)} runs over seeds {list(seeds)}",
        flush=True,
    )
    started = time.perf_counter()
    same_data = before.data.digest == after.data.digest
    tags = {
        "reprolab.audit_id": audit_id,
        "reprolab.audit.before": before.preset,
        "reprolab.audit.after": after.preset,
        "reprolab.audit.runs": str(len(jobs)),
        **({"reprolab.dataset_digest": before.data.digest} if same_data else {}),
    }
    with tracking.summary_run(config, f"audit {before.preset} -> {after.preset}", "audit-summary", tags) as summary_run:

        def describe(job: Job, result: RunResult) -> tuple[str, dict[str, str]]:
            side = before if job.preset.startswith(audit.BEFORE) else after
            return f"{job.preset} seed{job.seed}", {
                "reprolab.audit_id": audit_id,
                "reprolab.audit.variant": job.preset,
                "reprolab.target_met": str(meets_target(result.metrics, config.data.target)).lower(),
                "mlflow.runColor": preset_colour(side.preset, list(config.experiments)),
            }

        runs = run_sweep(
            jobs,
            kind="audit",
            parent_run_id=summary_run,
            describe=describe,
            log_models=log_models,
            workers=workers,
            scheduler=scheduler,
            reuse=reuse,
        )
        results = [run.result for run in runs]
        reused = sum(run.reused for run in runs)
        print(
            f"audit {audit_id}: {len(results)} runs ({reused} reused) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        summary = audit.summarize(
            results,
            changes,
            before.preset,
            after.preset,
            config.data.target,
            config.audit.confidence,
            {"before": before.data.digest, "after": after.data.digest},
            {label: side.data.labels() for label, side in ((audit.BEFORE, before), (audit.AFTER, after))},
        )
        descriptions = {
            audit.BEFORE: before.config.preset(before.preset).description,
            audit.AFTER: after.config.preset(after.preset).description,
        }
        markdown = audit_markdown(summary, descriptions, audit_id, reused)
        by_label = {label: [r for r in results if r.preset == label] for label in (audit.BEFORE, audit.AFTER)}
        with atomic_directory(output_dir) as tmp:
            (tmp / "audit.md").write_text(markdown)
            (tmp / "summary.json").write_text(json.dumps(_summary_json(summary, audit_id, reused), indent=2) + "\n")
            rows = [_run_row(run.result, run.run_id, run.reused) for run in runs]
            write_csv(tmp / "runs.csv", rows, list(rows[0]))
            titles = {label: f"{label}: {getattr(summary, label)}" for label in by_label}
            presets = list(config.experiments)
            plots.seed_bands(
                {titles[label]: group for label, group in by_label.items()},
                {titles[label]: preset_colour(getattr(summary, label), presets) for label in by_label},
                config.data.target,
                tmp / FIGURES["learning_curves"],
            )
            plots.ablation(summary, tmp / FIGURES["ablation"])
            plots.confusion_matrices(
                {
                    f"{label}: {getattr(summary, label)}, test, {len(group)} seeds summed": summed_confusion(group)
                    for label, group in by_label.items()
                },
                tmp / FIGURES["confusion"],
            )
            tracking.finish_summary(
                config,
                summary_run,
                sorted(tmp.iterdir()),
                "audit-summary",
                f"{summary.verdict}\n\nThe {len(results) - reused} runs trained for this audit are nested under "
                f"this run ({reused} more were reused from earlier runs); runs.csv lists every run id.",
                _summary_metrics(summary),
            )
    if summary_run:
        print(f"audit {audit_id}: MLflow summary run {summary_run}", flush=True)
    return summary, markdown
