"""The DVC stages: prepare -> train -> evaluate -> report, and the audit, each reading the
resolved params.yaml.

`dvc.yaml` calls these through `reprolab stage <name>`. Each stage writes its files through a
temporary name and renames them into place, so a failed stage leaves no half-written file.
`run_audit` is also what `reprolab audit` runs, for any two presets or params files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from reprolab import audit
from reprolab import data as datasets
from reprolab import tracking
from reprolab.audit_report import FIGURES, audit_markdown, plot_ablation, plot_seed_bands, summed_confusion
from reprolab.config import (Config, ConfigError, ModelConfig, RunConfig, compose_raw, read_params, to_dict,
                             validate)
from reprolab.files import atomic_directory, atomic_write
from reprolab.models import SequenceClassifier, build_model
from reprolab.report import meets_target, pipeline_report, plot_confusion, plot_confusions, plot_learning_curves
from reprolab.runs import Job, RunResult, run_jobs
from reprolab.training import HISTORY_KEYS, confusion_matrix, evaluate, predict, train

PARAMS_FILE = Path("params.yaml")
RESULTS_DIR = Path("results")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
AUDIT_DIR = REPORTS_DIR / "audit"


def run_dir(preset: str) -> Path:
    return RESULTS_DIR / preset


def model_file(preset: str) -> Path:
    return MODELS_DIR / f"{preset}.pt"


def load_stage_params(path: Path = PARAMS_FILE, conf_dir: Path = Path("conf")) -> Config:
    """params.yaml, validated; refused if it is not what composing `conf/` gives.

    Inside `dvc exp run` (DVC_EXP_NAME is set) DVC has just composed params.yaml from conf/
    and the `-S` overrides, so it is current by construction. Anywhere else a difference means
    conf/ was edited after the last composition, and training on params.yaml would be stale.
    The `tracking` section is left out of the comparison.
    """
    on_disk = read_params(path)
    config = validate(on_disk)
    if os.environ.get("DVC_EXP_NAME") or not (conf_dir / "config.yaml").is_file():
        return config
    # `tracking` says where runs are recorded, not what they compute: `reprolab compose
    # tracking=server` (or an edited conf/tracking/) is not a stale params.yaml.
    composed = compose_raw([], conf_dir)
    difference = _first_difference({k: v for k, v in on_disk.items() if k != "tracking"},
                                   {k: v for k, v in composed.items() if k != "tracking"})
    if difference:
        raise ConfigError(
            f"params: {path} is out of date with conf/ ({difference}); run `reprolab compose` to "
            f"rewrite it, then `dvc repro` (or use `dvc exp run`, which recomposes)")
    return config


def _first_difference(ours: Any, theirs: Any, key: str = "") -> Optional[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for name in sorted(set(ours) | set(theirs)):
            sub = f"{key}.{name}" if key else name
            if name not in ours or name not in theirs:
                return f"{sub} is only in {'conf/' if name in theirs else 'params.yaml'}"
            found = _first_difference(ours[name], theirs[name], sub)
            if found:
                return found
        return None
    if ours != theirs:
        return f"{key}: params.yaml has {ours!r}, conf/ gives {theirs!r}"
    return None


# -- files ---------------------------------------------------------------------------------

def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


def read_json(path: Path, hint: str) -> Any:
    if not path.is_file():
        raise datasets.DataError(f"{path} not found; {hint}")
    return json.loads(path.read_text())


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def read_history(preset: str) -> list[dict[str, float]]:
    with (run_dir(preset) / "history.csv").open() as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def save_model(model: SequenceClassifier, run: RunConfig, data: datasets.Dataset, path: Path) -> None:
    """The weights with what is needed to rebuild the model (no pickled classes)."""
    payload = {"state_dict": model.state_dict(), "model": to_dict(run.model),
               "input_size": data.num_features, "num_classes": data.num_classes}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: Path) -> SequenceClassifier:
    if not path.is_file():
        raise datasets.DataError(f"{path} not found; run `dvc repro` to train it")
    payload = torch.load(path, weights_only=True)
    model = build_model(ModelConfig(**payload["model"]), payload["input_size"], payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


# -- stages --------------------------------------------------------------------------------

def stage_check_params() -> str:
    """Stop if params.yaml is stale against conf/; record a constant note when it is current.

    The note never changes, so this stage rerunning does not invalidate the stages after it.
    """
    load_stage_params()
    note = "params.yaml is the composition of conf/ (or of conf/ with `dvc exp run -S` overrides)\n"
    atomic_write(RESULTS_DIR / "params_check.txt", lambda tmp: tmp.write_text(note))
    return note.strip()


def stage_prepare() -> datasets.Dataset:
    """Build and verify the dataset; record its digest, sizes and Bayes limit."""
    config = load_stage_params()
    dataset = datasets.prepare(config.data)
    write_json(RESULTS_DIR / "data.json", dataset.summary())
    return dataset


def stage_train(preset: str) -> dict:
    """Train one preset, log the run to MLflow, write the model and its per-epoch history."""
    config = load_stage_params()
    run = config.run_config(preset)
    data = datasets.load(config.data)
    with tracking.training_run(config, run, data) as tracked:
        trained = train(run, data, on_epoch=tracked.log_epoch)
        save_model(trained.model, run, data, model_file(preset))
        write_csv(run_dir(preset) / "history.csv", trained.history, ["epoch", *HISTORY_KEYS])
        tracked.log_training(trained, data)
        summary = {"preset": preset, "seed": run.seed, "mlflow_run_id": tracked.run_id,
                   "dataset_digest": data.digest, **trained.fit_summary()}
        write_json(run_dir(preset) / "train.json", summary)
    return summary


def stage_evaluate(preset: str) -> dict:
    """Evaluate one trained preset on every split; add the results to its MLflow run."""
    config = load_stage_params()
    data = datasets.load(config.data)
    trained = read_json(run_dir(preset) / "train.json", f"run `dvc repro train@{preset}` first")
    model = load_model(model_file(preset))
    metrics = evaluate(model, data)
    metrics["train_val_gap"] = metrics["train_accuracy"] - metrics["val_accuracy"]
    for name, split in data.splits.items():
        if split.bayes_accuracy is not None:
            metrics[f"{name}_bayes_accuracy"] = split.bayes_accuracy
    metrics["target_met"] = meets_target(metrics, config.target)
    test = data.splits["test"]
    actual, predicted = torch.from_numpy(test.y), predict(model, test.X).argmax(dim=1)
    write_csv(run_dir(preset) / "confusion.csv",
              [{"actual": a, "predicted": p} for a, p in zip(actual.tolist(), predicted.tolist())],
              ["actual", "predicted"])
    matrix = confusion_matrix(actual, predicted, data.num_classes)
    image = run_dir(preset) / "confusion.png"
    atomic_write(image, lambda tmp: plot_confusion(matrix, f"{preset}: test confusion matrix", tmp))
    with tracking.resume_run(config, trained["mlflow_run_id"]) as tracked:
        tracked.log_evaluation(metrics, [image])
    write_json(run_dir(preset) / "metrics.json", {"preset": preset, "seed": trained["seed"], **metrics})
    return metrics


def stage_report(presets: Optional[list[str]] = None) -> str:
    """Compare the presets (default: all): a Markdown table, learning curves, logged to MLflow."""
    config = load_stage_params()
    presets = presets or list(config.experiments)
    rows = []
    for preset in presets:
        metrics = read_json(run_dir(preset) / "metrics.json", f"run `dvc repro evaluate@{preset}` first")
        trained = read_json(run_dir(preset) / "train.json", f"run `dvc repro train@{preset}` first")
        rows.append({**trained, **metrics})
    digests = {row["dataset_digest"] for row in rows}
    if len(digests) != 1:
        raise datasets.DataError(f"the presets were trained on different datasets ({sorted(digests)}); "
                                 f"rerun `dvc repro` so that all use the pinned one")
    markdown = pipeline_report(rows, config)
    curves = REPORTS_DIR / "learning_curves.png"
    atomic_write(REPORTS_DIR / "comparison.md", lambda tmp: tmp.write_text(markdown))
    atomic_write(curves, lambda tmp: plot_learning_curves({p: read_history(p) for p in presets}, tmp))
    write_json(REPORTS_DIR / "summary.json", {row["preset"]: {
        key: row[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy", "train_val_gap",
                                  "target_met", "best_epoch", "mlflow_run_id")} for row in rows})
    run_ids = {row["preset"]: row["mlflow_run_id"] for row in rows}
    tracking.log_summary_run(
        config, "report", "report", [REPORTS_DIR / "comparison.md", curves, REPORTS_DIR / "summary.json"],
        {"reprolab.dataset_digest": next(iter(digests)),
         **{f"reprolab.run.{preset}": run_id for preset, run_id in run_ids.items()}},
        "Comparison of " + ", ".join(f"{preset} (run {run_id})" for preset, run_id in run_ids.items()))
    return markdown



# -- the audit -----------------------------------------------------------------------------

@dataclasses.dataclass
class AuditSide:
    """One side of an audit: a preset of a config, and that config's verified dataset."""

    preset: str
    config: Config
    data: datasets.Dataset
    source: str  # where the config came from, for messages


def _check_same_data(before: AuditSide, after: AuditSide, allow_mismatch: bool) -> None:
    if before.data.digest != after.data.digest and not allow_mismatch:
        raise datasets.DataError(
            f"audit: the two sides use different datasets: before ({before.source}) has digest "
            f"{before.data.digest[:12]}…, after ({after.source}) has {after.data.digest[:12]}…; "
            f"an audit compares changes on one dataset. Use the same data config on both sides, or "
            f"pass --allow-dataset-mismatch to compare anyway (the report then says so)")


def _audit_jobs(before: AuditSide, after: AuditSide, seeds: Sequence[int], audit_id: str,
                tracking_config) -> tuple[list[audit.Change], list[Job], dict[str, AuditSide]]:
    """The changes, one job per (variant, seed), and which side's data each variant uses."""
    old, new = before.config.preset(before.preset), after.config.preset(after.preset)
    changes = audit.derive_changes(old, new)
    if not changes:
        raise ConfigError(f"audit: {before.preset} and {after.preset} have the same model and training; "
                          f"there is nothing to audit")
    jobs, sides = [], {}
    for label, variant in audit.ablation_variants(old, new).items():
        side = before if label.startswith(audit.BEFORE) else after
        variant = dataclasses.replace(variant, description=f"audit {audit_id}: {label} "
                                      f"({before.preset} -> {after.preset})")
        config = dataclasses.replace(side.config, experiments={label: variant}, experiment=label,
                                     tracking=tracking_config)
        sides[label] = side
        jobs += [Job(config, label, seed) for seed in seeds]
    return changes, jobs, sides


def _run_row(result: RunResult, run_id: Optional[str]) -> dict:
    return {"configuration": result.preset, "seed": result.seed,
            **{key: result.metrics[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy")},
            "best_epoch": result.fit["best_epoch"], "epochs_run": result.fit["epochs_run"],
            "dataset_digest": result.dataset_digest, "mlflow_run_id": run_id or ""}


def _summary_json(summary: audit.AuditSummary, audit_id: str) -> dict:
    def stats(values: dict[str, audit.Interval]) -> dict:
        return {key: dataclasses.asdict(interval) for key, interval in values.items()}

    return {
        "audit_id": audit_id, "before": summary.before, "after": summary.after, "seeds": summary.seeds,
        "confidence": summary.confidence, "dataset_digests": summary.dataset_digests, "verdict": summary.verdict,
        "configurations": {label: {"holds": check.holds, "seeds_met": check.seeds_met,
                                   "intervals_clear": check.interval_clears, **stats(check.stats)}
                           for label, check in summary.variants.items()},
        "changes": {effect.change.name: {"needed": effect.needed, "sufficient": effect.sufficient,
                                         "keys": {key: list(pair) for key, pair in effect.change.values.items()},
                                         "alone": stats(effect.alone), "in_after": stats(effect.in_after)}
                    for effect in summary.effects},
    }


def _summary_metrics(summary: audit.AuditSummary) -> dict[str, float]:
    """Headline numbers for the MLflow summary run (names within MLflow's allowed characters)."""
    metrics = {}
    for effect in summary.effects:
        for context in ("alone", "in_after"):
            for key, interval in getattr(effect, context).items():
                metrics[f"effect/{effect.change.name}/{context}/{key}"] = interval.mean
    for label, check in summary.variants.items():
        name = label.replace(" + ", " plus ").replace(" - ", " minus ")
        metrics[f"config/{name}/val_accuracy"] = check.stats["val_accuracy"].mean
        metrics[f"config/{name}/holds"] = float(check.holds)
    return metrics


def run_audit(config: Config, before: AuditSide, after: AuditSide, seeds: Sequence[int], output_dir: Path,
              workers: Optional[int] = None, allow_dataset_mismatch: bool = False,
              log_models: bool = True) -> tuple[audit.AuditSummary, str]:
    """Train before, after, before + each change and after - each change for every seed, in
    parallel; record each run in MLflow as it finishes; write the report into `output_dir`
    (all files or none) and log it on a summary run. Returns the summary and the Markdown."""
    if len(set(seeds)) < 2:
        raise ConfigError(f"audit: needs at least 2 different seeds for an interval, got {list(seeds)}")
    _check_same_data(before, after, allow_dataset_mismatch)
    audit_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    changes, jobs, sides = _audit_jobs(before, after, seeds, audit_id, config.tracking)
    print(f"audit {audit_id}: {before.preset} -> {after.preset}, {len(changes)} changes "
          f"({', '.join(c.name for c in changes)}), {len(jobs)} runs over seeds {list(seeds)}", flush=True)
    run_ids: dict[tuple[str, int], Optional[str]] = {}
    started = time.perf_counter()

    def record(job: Job, trained, result: RunResult) -> None:
        side = sides[job.preset]
        run = job.config.run_config(job.preset, job.seed)
        with tracking.training_run(job.config, run, side.data, kind="audit", log_model=log_models,
                                   started_s_ago=result.fit["wall_time_s"],
                                   run_name=f"audit {job.preset} seed{job.seed}",
                                   tags={"reprolab.audit_id": audit_id, "reprolab.audit.variant": job.preset,
                                         "reprolab.audit.before": before.preset,
                                         "reprolab.audit.after": after.preset}) as tracked:
            tracked.log_training(trained, side.data)
            metrics = {**result.metrics, "train_val_gap": result.metrics["train_accuracy"]
                       - result.metrics["val_accuracy"], "target_met": meets_target(result.metrics, config.target)}
            tracked.log_evaluation(metrics)
        run_ids[(job.preset, job.seed)] = tracked.run_id
        print(f"[{len(run_ids)}/{len(jobs)}] {job.preset}, seed {job.seed}: val {metrics['val_accuracy']:.3f}, "
              f"train {metrics['train_accuracy']:.3f} ({result.fit['wall_time_s']:.1f} s)", flush=True)

    results = run_jobs(jobs, workers, on_result=record)
    print(f"audit {audit_id}: {len(results)} runs in {time.perf_counter() - started:.0f} s", flush=True)
    summary = audit.summarize(results, changes, before.preset, after.preset, config.target,
                              config.audit.confidence, {"before": before.data.digest, "after": after.data.digest})
    descriptions = {audit.BEFORE: before.config.preset(before.preset).description,
                    audit.AFTER: after.config.preset(after.preset).description}
    markdown = audit_markdown(summary, descriptions, audit_id)
    by_label = {label: [r for r in results if r.preset == label] for label in (audit.BEFORE, audit.AFTER)}
    with atomic_directory(output_dir) as tmp:
        (tmp / "audit.md").write_text(markdown)
        write_json(tmp / "summary.json", _summary_json(summary, audit_id))
        rows = [_run_row(r, run_ids.get((r.preset, r.seed))) for r in results]
        write_csv(tmp / "runs.csv", rows, list(rows[0]))
        plot_seed_bands({f"{label}: {getattr(summary, label)}": runs for label, runs in by_label.items()},
                        config.target, tmp / FIGURES["learning_curves"])
        plot_ablation(summary, tmp / FIGURES["ablation"])
        plot_confusions({f"{label}: {getattr(summary, label)}, test, {len(runs)} seeds summed":
                         summed_confusion(runs) for label, runs in by_label.items()}, tmp / FIGURES["confusion"])
        files = sorted(tmp.iterdir())
        summary_run = tracking.log_summary_run(
            config, f"audit {before.preset} -> {after.preset}", "audit-summary", files,
            {"reprolab.audit_id": audit_id, "reprolab.audit.before": before.preset,
             "reprolab.audit.after": after.preset, "reprolab.audit.runs": str(len(results)),
             **({"reprolab.dataset_digest": before.data.digest}
                if before.data.digest == after.data.digest else {})},
            f"{summary.verdict}\n\nThe {len(results)} runs of this audit carry the tag "
            f"reprolab.audit_id = '{audit_id}'; runs.csv lists their run ids.",
            _summary_metrics(summary))
    if summary_run:
        print(f"audit {audit_id}: MLflow summary run {summary_run}", flush=True)
    return summary, markdown


def stage_audit() -> str:
    """The audit as a DVC stage: `audit.before` vs `audit.after` of params.yaml over `audit.seeds`."""
    config = load_stage_params()
    data = datasets.load(config.data)
    before, after = (AuditSide(preset, config, data, "params.yaml")
                     for preset in (config.audit.before, config.audit.after))
    _, markdown = run_audit(config, before, after, config.audit.seeds, AUDIT_DIR, workers=config.audit.workers,
                            log_models=config.audit.log_models)
    return markdown
