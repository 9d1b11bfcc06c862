"""Stage `report`: compare the presets over seeds and on the pipeline's own seed, in tables and
two figures, and link it all in MLflow.

Every preset runs for each of `audit.seeds` (a FINISHED run with the same run key stands in: the
train stages' runs and the audit's before and after runs are not trained again), so "target
met" says whether the target holds over the seeds, with intervals, not on one lucky seed.
Writes `reports/comparison.md` (the presets over the seeds, then the seed whose models the
pipeline keeps, with warnings and the bounds missed), `reports/learning_curves.png`,
`reports/confusion.png` and `reports/summary.json`. In MLflow it nests the new runs under a
`report` run that holds the report and names the runs it compares, tags each preset's training
run with its target verdict over the seeds and adds its confusion matrix, and registers the
model of `audit.after` under the `after` alias of `reprolab-<data.name>`
(`models:/reprolab-synthetic@after`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from reprolab import entrypoint, numerics
from reprolab.audit.checks import seed_checks
from reprolab.config import load_params
from reprolab.files import FileFormatError, Outputs, read_csv, read_json
from reprolab.metrics import HEADLINE, confusion_matrix, met_tag, missed_bounds, target_met, with_gap
from reprolab.references import references
from reprolab.report import SEED_COLUMNS, comparison_table, pipeline_report, references_table, seeds_note, seeds_verdict
from reprolab.results import HISTORY_COLUMNS, runs_warnings
from reprolab.stages import (
    DATA_SUMMARY,
    DATA_SUMMARY_SHAPE,
    FIT_SHAPE,
    PARAMS_FILE,
    PREDICTION_COLUMNS,
    REPORTS_DIR,
    fit_file,
    history_file,
    predictions_file,
)

FIGURES = {"learning curves": "learning_curves.png", "test confusion matrices": "confusion.png"}


def main() -> int:
    from reprolab import data as datasets
    from reprolab.figures import confusion_matrices, learning_curves
    from reprolab.jobs.job import Job, scheduler_address
    from reprolab.jobs.sweep import run_sweep
    from reprolab.tracking.registry import register_model
    from reprolab.tracking.runs import annotate_run, finish_summary, record_references, summary_run

    config = load_params(PARAMS_FILE)
    numerics.apply(config.compute.numerics.value)  # before torch is imported
    presets = list(config.experiments)
    target = config.data.target
    fits = {p: read_json(fit_file(p), f"rerun its training: `dvc repro --force train@{p}`", FIT_SHAPE) for p in presets}
    data = datasets.load(config.data)
    digests = {fit["dataset_digest"] for fit in fits.values()}
    if digests != {data.digest}:
        raise FileFormatError(
            f"the presets were trained on other data ({', '.join(sorted(digests))}) than "
            f"{config.data.prepared_path} ({data.digest}); rerun `dvc repro` so that all use the current one"
        )
    histories = {p: read_csv(history_file(p), f"rerun `dvc repro --force train@{p}`", HISTORY_COLUMNS) for p in presets}
    data_summary = read_json(DATA_SUMMARY, "rerun `dvc repro prepare`", DATA_SUMMARY_SHAPE)
    confusions = {}
    warnings = list(data_summary.get("warnings", []))
    for preset in presets:
        fix = f"rerun `dvc repro --force train@{preset}`"
        rows = read_csv(predictions_file(preset), fix, PREDICTION_COLUMNS)
        actual, predicted = [r["actual"] for r in rows], [r["predicted"] for r in rows]
        classes = data_summary["num_classes"]
        if min(actual + predicted) < 0 or max(actual + predicted) >= classes:
            raise FileFormatError(f"{predictions_file(preset)} holds classes outside 0..{classes - 1}; {fix}")
        confusions[preset] = confusion_matrix(actual, predicted, classes)
    bayes = data_summary.get("val", {}).get("bayes_accuracy")
    seeds = config.audit.seeds
    run_ids = {p: fit["mlflow_run_id"] for p, fit in fits.items() if fit["mlflow_run_id"]}
    names = ["comparison.md", "summary.json", *FIGURES.values()]
    tags = {"reprolab.dataset_digest": data.digest, **{f"reprolab.run.{p}": r for p, r in run_ids.items()}}
    # Everything is recorded before the files are put in place: if MLflow fails, the old report stays.
    with summary_run(config, "report", "report", tags) as report_run, tempfile.TemporaryDirectory() as scratch:
        swept = run_sweep(
            [Job(config, preset, seed, data) for preset in presets for seed in seeds],
            kind="compare",
            parent_run_id=report_run,
            describe=lambda job, result: (
                f"{job.preset}-seed{job.seed}",
                {"reprolab.target_met": met_tag(target_met(result.metrics, target))},
            ),
            log_models=config.tracking.log_sweep_models,
            workers=config.compute.workers,
            scheduler=scheduler_address(config.compute),
            reuse=config.compute.reuse,
        )
        results = [run.result for run in swept]
        warnings = runs_warnings(results, dict.fromkeys(presets, data.splits["train"].y), warnings)
        checks = seed_checks(results, data.labels(), target, config.audit.confidence)
        found = references(config.references, data)
        reference_runs = record_references(config, report_run, found, {"reprolab.dataset_digest": data.digest})
        note = seeds_note(config.audit.confidence, len(seeds), target)
        over_seeds = (seeds, comparison_table(results, checks, target), note)
        shown = references_table(found, reference_runs)
        markdown = pipeline_report(
            list(fits.values()), config.data.name, target, bayes, FIGURES, over_seeds, warnings, references=shown
        )
        summary = {
            p: {
                **{k: round(v, 6) for k, v in with_gap(fit["metrics"]).items() if k in HEADLINE},
                "seed": fit["seed"],
                "target_met_on_seed": target_met(fit["metrics"], target),  # null with no target
                "seeds": checks[p].seeds,
                "over_seeds": {key: dataclasses.asdict(checks[p].stats[key]) for key in SEED_COLUMNS},
                # "yes", "no" or "cannot tell" (`seeds_verdict`); null with no target
                "target_over_seeds": checks[p].judged() if checks[p].targeted else None,
            }
            for p, fit in fits.items()
        }
        built = Path(scratch)
        (built / "comparison.md").write_text(markdown)
        (built / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        learning_curves(histories, built / FIGURES["learning curves"])
        confusion_matrices({f"{p}: test": m for p, m in confusions.items()}, built / FIGURES["test confusion matrices"])
        for preset, run_id in run_ids.items():
            own = built / preset / "confusion.png"
            own.parent.mkdir()
            confusion_matrices({f"{preset}: test": confusions[preset]}, own)
            missed = missed_bounds(fits[preset]["metrics"], target)
            annotate_run(
                config,
                run_id,
                {
                    "reprolab.target_met": met_tag(target_met(fits[preset]["metrics"], target)),
                    "reprolab.target_missed": "; ".join(missed) or "-",
                    "reprolab.target_over_seeds": seeds_verdict(checks[preset], target),
                },
                [own],
            )
        after = config.audit.after
        if after in run_ids:
            register_model(
                config,
                run_ids[after],
                {
                    "reprolab.preset": after,
                    "reprolab.target_met": met_tag(summary[after]["target_met_on_seed"]),
                    "reprolab.target_over_seeds": seeds_verdict(checks[after], target),
                },
            )
        reused = sum(run.reused for run in swept)
        finish_summary(
            config,
            report_run,
            [built / name for name in names],
            "report",
            f"Comparison of {', '.join(presets)} over seeds {', '.join(map(str, seeds))}: "
            f"{len(swept) - reused} runs trained and nested under this run, {reused} reused",
            tags={f"reprolab.seed_run.{r.result.preset}-seed{r.result.seed}": r.run_id or "-" for r in swept},
        )
        with Outputs() as outputs:
            for name in names:
                outputs.copy(REPORTS_DIR / name, built / name)
    print(markdown)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
