"""Running an audit: train every ablation variant for every seed, record each run in MLflow
under the audit's summary run, and write the report (all files or none)."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from reprolab import data as datasets
from reprolab.audit.design import (
    AFTER,
    BEFORE,
    CODE,
    MAX_CHANGES,
    Change,
    apply_changes,
    coalitions,
    code_change,
    derive_changes,
    side_of,
)
from reprolab.audit.figures import ablation, attribution, seed_bands
from reprolab.audit.kfold import fold_jobs, pooled, resampling
from reprolab.audit.report import FIGURES, audit_markdown, summed_confusion
from reprolab.audit.summary import SHARED_METRICS, run_row, summary_json, summary_metrics
from reprolab.audit.verdict import AuditSummary, summarize
from reprolab.config import (
    Config,
    ConfigError,
    Resampling,
    TrackingConfig,
    differences,
    load_params,
    to_dict,
    validate_params,
)
from reprolab.figures import confusion_matrices, preset_colour
from reprolab.files import FileFormatError, Outputs, check_output_path, write_csv
from reprolab.jobs.job import Job
from reprolab.jobs.recorded import config_errors
from reprolab.jobs.sweep import run_sweep
from reprolab.metrics import met_tag, target_met
from reprolab.record.code import THIS_CHECKOUT, TRAINING_MODULE, CodeError, RecordedCode
from reprolab.results import RunResult, runs_warnings
from reprolab.sources import code_digest
from reprolab.tracking.artifacts import PARAMS_ARTIFACT, RUN_ARTIFACT
from reprolab.tracking.cache import run_key
from reprolab.tracking.links import resolve_run
from reprolab.tracking.recorded import of_run, recorded_config
from reprolab.tracking.runs import finish_summary, summary_run, tag_runs
from reprolab.tracking.store import connect


@dataclasses.dataclass
class AuditSide:
    """One side of an audit: a preset of a config, that config's checked dataset, and the code
    that trains it (this checkout's, or the recorded code of the run it came from)."""

    preset: str
    config: Config
    data: datasets.Dataset
    source: str  # where the config came from, for messages
    run_id: Optional[str] = None  # the recorded run this side was taken from
    code: Optional[RecordedCode] = None  # None: this checkout's code
    note: Optional[str] = None  # printed once the audit can start

    @property
    def name(self) -> str:
        """How the report names this side: the preset, and the run it came from."""
        return f"{self.preset} (run {self.run_id[:8]})" if self.run_id else self.preset

    @property
    def code_label(self) -> str:
        return self.code.label if self.code else THIS_CHECKOUT

    @property
    def training_digest(self) -> str:
        return self.code.training_digest if self.code else code_digest(TRAINING_MODULE)


def _with_data(config: Config, data: datasets.Dataset, side: Config, scratch: Path, label: str):
    """The side's config and dataset: the composed config's dataset when the data settings are
    the same, else one built from the side's own settings into `scratch`."""
    if side.data == config.data:
        return side, data
    side_data = dataclasses.replace(side.data, prepared_path=str(scratch / f"{label}.npz"))
    return dataclasses.replace(side, data=side_data), datasets.build(side_data)


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
    side, side_data = _with_data(config, data, side, scratch, label)
    return AuditSide(preset, side, side_data, params_file)


def side_from_run(config: Config, data: datasets.Dataset, reference: str, scratch: Path, label: str) -> AuditSide:
    """One side of an audit from a recorded training run (its id, runs:/<id>, its UI page, or a
    registered model version): the run's own configuration and preset, its dataset rebuilt and
    checked against the digest it recorded, and the code that trained it: this checkout's when
    the run key comes out the same with it, else the run's recorded code."""
    store = connect(config.tracking)
    run = resolve_run(store, reference, "audit")
    run_id, folder = run.info.run_id, scratch / label
    if run.info.lifecycle_stage == "deleted" or run.info.status != "FINISHED":
        state = "was deleted" if run.info.lifecycle_stage == "deleted" else f"is {run.info.status}, not FINISHED"
        raise ConfigError(
            f"audit: MLflow run {run_id} ({run.info.run_name}) {state}: its record is not a finished result; give a "
            f"run that finished"
        )
    recorded = recorded_config(store, run, folder, "audit")  # its signature and config, checked
    if recorded is None:
        raise ConfigError(
            f"audit: MLflow run {run_id} ({run.info.run_name}) is not a training run: it has no {PARAMS_ARTIFACT} "
            f"or {RUN_ARTIFACT}; give the id of a run that trained a model"
        )
    chosen = recorded.run
    side = validate_params(recorded.params, f"run {run_id}'s {PARAMS_ARTIFACT}")
    preset, seed = chosen["preset"], int(chosen["seed"])
    side, side_data = _with_data(config, data, side, scratch, label)
    recorded = run.data.tags.get("reprolab.dataset_digest", "")
    if side_data.digest != recorded:
        raise datasets.DataError(
            f"audit: run {run_id} trained on data with digest {recorded[:12]}…, but its data settings build "
            f"{side_data.digest[:12]}… here: the data changed since; restore that data (`dvc checkout`, or the "
            f"file at {side.data.user_file or side.data.prepared_path}) to audit this run"
        )
    recorded_key, code, note = run.data.tags.get("reprolab.run_key"), None, None
    if run_key(side.run_config(preset, seed), side_data.digest) != recorded_key:
        code = of_run(run, store, folder, "audit")
        if run_key(side.run_config(preset, seed), side_data.digest, code) != recorded_key:
            note = (
                f"audit: run {run_id}'s run key does not come out the same here (this checkout reads its settings "
                f"differently, or other torch or NumPy versions): it is trained again by its code, not reused"
            )
    return AuditSide(preset, side, side_data, f"run {run_id}", run_id, code, note)


def _check_same_data(before: AuditSide, after: AuditSide, allow_mismatch: bool) -> None:
    if before.data.digest != after.data.digest and not allow_mismatch:
        raise datasets.DataError(
            f"audit: the two sides use different datasets: before ({before.source}) has digest "
            f"{before.data.digest[:12]}…, after ({after.source}) has {after.data.digest[:12]}…; "
            f"an audit compares changes on one dataset. Use the same data config on both sides, or "
            f"pass --allow-dataset-mismatch to compare anyway (the report then says so)"
        )


def ablation_jobs(
    before: AuditSide, after: AuditSide, seeds: Sequence[int], audit_id: str, tracking_config: TrackingConfig
) -> tuple[list[Change], list[Job]]:
    """The changes, and one job per (variant, seed) on its side's data. When the two sides were
    trained by different code, the training code is one more change: each variant is trained by
    the after side's code if it holds that change, else by the before side's."""
    old, new = before.config.preset(before.preset), after.config.preset(after.preset)
    other_code = before.training_digest != after.training_digest
    changes = derive_changes(old, new, room=MAX_CHANGES - other_code)
    if other_code:
        changes.append(code_change(before.code_label, after.code_label, TRAINING_MODULE))
    if not changes:
        raise ConfigError(
            f"audit: {before.name} and {after.name} have the same model and training; there is nothing to audit"
        )
    shared_code = before.code if before.code and after.code else None
    jobs = []
    for subset, label in coalitions(changes).items():
        variant = apply_changes(old, [c for c in changes if c.name in subset], "after")
        side = {BEFORE: before, AFTER: after}[side_of(label)]
        code = (after if CODE in subset else before).code if other_code else shared_code
        variant = dataclasses.replace(variant, description=f"audit {audit_id}: {label} ({before.name} -> {after.name})")
        # The side's presets stay beside the variant, so the config each run records is one that
        # validates (its audit.before and audit.after name presets): it can be read back and rerun.
        experiments = {**side.config.experiments, label: variant}
        config = dataclasses.replace(side.config, experiments=experiments, experiment=label, tracking=tracking_config)
        jobs += [Job(config, label, seed, side.data, code) for seed in seeds]
    return changes, jobs


def _check_codes_take(jobs: Sequence[Job]) -> None:
    """Before anything trains: each recorded code must take the configurations it is to train
    (a setting that the other side's code added is unknown to it), checked in one process per code."""
    by_code: dict[str, tuple[RecordedCode, dict[str, dict]]] = {}
    for job in jobs:
        if job.code is not None:
            by_code.setdefault(job.code.training_digest, (job.code, {}))[1].setdefault(job.preset, to_dict(job.config))
    for code, configs in by_code.values():
        try:
            errors = config_errors(code.archive, list(configs.values()))
        except CodeError as error:
            raise ConfigError(f"audit: {code.label} does not start: {error}") from error
        for label, refusal in zip(configs, errors):
            if refusal is not None:
                raise ConfigError(
                    f"audit: {code.label} cannot run the configuration '{label}' ({refusal}); the code change can "
                    f"be audited only between runs whose settings both codes know"
                )


def _description(config: Config, side: AuditSide) -> str:
    """The side's preset description, and for a recorded run, where its settings differ from
    that preset in this checkout's configuration (a description does not follow an override)."""
    own = side.config.preset(side.preset)
    if side.run_id is None or side.preset not in config.experiments:
        return own.description
    changed = [
        f"{key} {old} -> {new}"
        for key, old, new in differences(to_dict(config.preset(side.preset)), to_dict(own))
        if key != "description"
    ]
    note = f" (the run's settings differ from {side.preset} in conf/: {', '.join(changed)})" if changed else ""
    return own.description + note


OUTPUT_FILES = ("audit.md", "summary.json", "runs.csv", *FIGURES.values())  # what an audit writes, and nothing else


def check_output_dir(output_dir: Path) -> None:
    """Before any training: the folder is a directory (or absent), and each file the audit writes
    there is a regular file or absent (never a directory, FIFO, socket or device)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileFormatError(f"audit: --output-dir {output_dir} is not a directory; give a folder for the report")
    for name in OUTPUT_FILES:
        try:
            check_output_path(output_dir / name)
        except IsADirectoryError:
            raise FileFormatError(
                f"audit: {output_dir / name} is a directory, where the audit writes its {name}; move it aside or give "
                f"another --output-dir"
            ) from None


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
) -> tuple[AuditSummary, str]:
    """Train before, after, before + each change and after - each change for every seed (on
    local processes, or the Dask cluster at `scheduler`), reusing finished runs with the same
    run key; record each new run in MLflow as it finishes, nested under the audit's summary run;
    write the report's files into `output_dir` (all of them or none; nothing else there is
    touched) and attach them to the summary run.
    Returns the summary and the Markdown."""
    if len(set(seeds)) < 2:
        raise ConfigError(f"audit: needs at least 2 different seeds for an interval, got {list(seeds)}")
    _check_same_data(before, after, allow_dataset_mismatch)
    check_output_dir(output_dir)
    audit_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    changes, jobs = ablation_jobs(before, after, seeds, audit_id, config.tracking)
    kfold = config.audit.resampling is Resampling.kfold
    if kfold:
        jobs = fold_jobs(jobs, config.audit.folds, config.audit.repeats)
    _check_codes_take(jobs)
    sides = {BEFORE: before, AFTER: after}
    for side in (before, after):
        if side.note:
            print(side.note, file=sys.stderr, flush=True)
    print(
        f"audit {audit_id}: {before.name} -> {after.name}, {len(changes)} changes "
        f"({', '.join(c.name for c in changes)}), {len(jobs)} runs over seeds {list(seeds)}"
        + (f", {config.audit.folds} folds x {config.audit.repeats} repeats" if kfold else ""),
        flush=True,
    )
    started = time.perf_counter()
    same_data = before.data.digest == after.data.digest
    tags = {
        "reprolab.audit_id": audit_id,
        "reprolab.audit.before": before.name,
        "reprolab.audit.after": after.name,
        **{
            f"reprolab.audit.{label}_run": side.run_id
            for label, side in (("before", before), ("after", after))
            if side.run_id
        },
        "reprolab.audit.runs": str(len(jobs)),
        **(
            {"reprolab.audit.code": f"{before.code_label} -> {after.code_label}"}
            if any(change.name == CODE for change in changes)
            else {}
        ),
        **({"reprolab.dataset_digest": before.data.digest} if same_data else {}),
    }
    with summary_run(config, f"audit {before.name} -> {after.name}", "audit-summary", tags) as summary_id:

        def describe(job: Job, result: RunResult) -> tuple[str, dict[str, str]]:
            side, fold = sides[side_of(job.preset)], job.config.data.fold
            return f"{job.preset} seed{job.seed}" + (f" fold{fold.index}" if fold else ""), {
                "reprolab.audit_id": audit_id,
                "reprolab.audit.variant": job.preset,
                **({"reprolab.audit.fold": str(fold.index)} if fold else {}),
                "reprolab.target_met": met_tag(target_met(result.metrics, config.data.target)),
                "mlflow.runColor": preset_colour(side.preset, list(config.experiments)),
            }

        runs = run_sweep(
            jobs,
            kind="audit",
            parent_run_id=summary_id,
            describe=describe,
            log_models=log_models,
            workers=workers,
            scheduler=scheduler,
            reuse=reuse,
        )
        results = [run.result for run in runs]
        folds = [job.config.data.fold for job in jobs]  # None in a holdout audit
        reused = sum(run.reused for run in runs)
        print(
            f"audit {audit_id}: {len(results)} runs ({reused} reused) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        measured, labels = (
            pooled(
                list(zip(results, folds)), {k: (side.data, side.config.data.split_seed) for k, side in sides.items()}
            )
            if kfold
            else (results, {label: side.data.labels() for label, side in sides.items()})
        )
        summary = summarize(
            measured,
            changes,
            before.name,
            after.name,
            config.data.target,
            config.audit.confidence,
            {"before": before.data.digest, "after": after.data.digest},
            labels,
            resampling(config.audit, after.config.data.split_seed),
        )
        summary.warnings += runs_warnings(
            results,
            {job.preset: sides[side_of(job.preset)].data.splits["train"].y for job in jobs},
            before.data.warnings + after.data.warnings,
            [f"{r.preset} seed {r.seed}" + (f" fold {f.index}" if f else "") for r, f in zip(results, folds)],
        )
        descriptions = {BEFORE: _description(config, before), AFTER: _description(config, after)}
        markdown = audit_markdown(summary, descriptions, audit_id, reused)
        by_label = {label: [r for r in results if r.preset == label] for label in (BEFORE, AFTER)}
        with tempfile.TemporaryDirectory(prefix="reprolab-audit-") as scratch:
            tmp = Path(scratch)
            (tmp / "audit.md").write_text(markdown)
            (tmp / "summary.json").write_text(json.dumps(summary_json(summary, audit_id, reused), indent=2) + "\n")
            rows = [run_row(run.result, run.run_id, run.reused, fold) for run, fold in zip(runs, folds)]
            write_csv(tmp / "runs.csv", rows, list(rows[0]))
            titles = {label: f"{label}: {sides[label].name}" for label in by_label}
            presets = list(config.experiments)
            seed_bands(
                {titles[label]: group for label, group in by_label.items()},
                {titles[label]: preset_colour(sides[label].preset, presets) for label in by_label},
                config.data.target,
                tmp / FIGURES["learning_curves"],
            )
            ablation(summary, tmp / FIGURES["ablation"])
            attribution(summary, SHARED_METRICS, tmp / FIGURES["attribution"])
            confusion_matrices(
                {
                    f"{label}: {getattr(summary, label)}, test, {len(group)} runs summed": summed_confusion(group)
                    for label, group in by_label.items()
                },
                tmp / FIGURES["confusion"],
            )
            finish_summary(
                config,
                summary_id,
                [tmp / name for name in OUTPUT_FILES],
                "audit-summary",
                f"{summary.verdict}\n\nThe {len(results) - reused} runs trained for this audit are nested under "
                f"this run ({reused} more were reused from earlier runs); runs.csv lists every run id.",
                summary_metrics(summary),
                rests_on=[run.run_id for run in runs],
            )
            with Outputs() as outputs:  # each file of ours renamed into place; nothing else in the folder is touched
                for name in OUTPUT_FILES:
                    outputs.copy(output_dir / name, tmp / name)
    if summary_id:
        explained = [side.run_id for side in (before, after) if side.run_id]
        tag_runs(config, explained, {"reprolab.audit.explained_by": audit_id, "reprolab.audit.summary_run": summary_id})
        print(f"audit {audit_id}: MLflow summary run {summary_id}", flush=True)
    return summary, markdown
