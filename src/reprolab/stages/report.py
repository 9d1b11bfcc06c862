"""Stage `report`: compare the presets in one table and two figures, and link it all in MLflow.

Writes `reports/comparison.md` (every preset's metrics and whether it met the target, naming the
bound it missed), `reports/learning_curves.png`, `reports/confusion.png` and `reports/summary.json`.
In MLflow it tags each preset's training run with its target verdict and adds its confusion
matrix, registers the model of `audit.after` under the `after` alias of `reprolab-<data.name>`
(`models:/reprolab-synthetic@after`), and logs a `report` run that holds the report and names
the runs it compares.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from reprolab import entrypoint
from reprolab.config import load_params
from reprolab.files import FileFormatError, Outputs, read_csv, read_json
from reprolab.metrics import HEADLINE, confusion_matrix, fit_warnings, meets_target, missed_bounds, with_gap
from reprolab.report import pipeline_report
from reprolab.results import HISTORY_COLUMNS
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
    from reprolab import plots, tracking

    config = load_params(PARAMS_FILE)
    presets = list(config.experiments)
    target = config.data.target
    fits = {p: read_json(fit_file(p), f"rerun its training: `dvc repro --force train@{p}`", FIT_SHAPE) for p in presets}
    digests = {fit["dataset_digest"] for fit in fits.values()}
    if len(digests) != 1:
        raise FileFormatError(
            f"the presets were trained on different datasets ({', '.join(sorted(digests))}); "
            f"rerun `dvc repro` so that all use the current one"
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
        counts = data_summary["train"]["class_counts"]
        warnings += [
            f"{preset}: {warning}"
            for warning in fit_warnings(fits[preset]["metrics"]["train_accuracy"], counts, {"test": predicted})
        ]
    bayes = data_summary.get("val", {}).get("bayes_accuracy")

    markdown = pipeline_report(list(fits.values()), config.data.name, target, bayes, FIGURES, warnings)
    summary = {
        p: {
            **{k: round(v, 6) for k, v in with_gap(fit["metrics"]).items() if k in HEADLINE},
            "target_met": meets_target(fit["metrics"], target),
        }
        for p, fit in fits.items()
    }
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(scratch)
        (built / "comparison.md").write_text(markdown)
        (built / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plots.learning_curves(histories, built / FIGURES["learning curves"])
        plots.confusion_matrices(
            {f"{p}: test": m for p, m in confusions.items()}, built / FIGURES["test confusion matrices"]
        )
        # Recorded before the files are put in place: if MLflow fails, the old report stays.
        run_ids = {p: fit["mlflow_run_id"] for p, fit in fits.items() if fit["mlflow_run_id"]}
        for preset, run_id in run_ids.items():
            own = built / preset / "confusion.png"
            own.parent.mkdir()
            plots.confusion_matrices({f"{preset}: test": confusions[preset]}, own)
            missed = missed_bounds(fits[preset]["metrics"], target)
            tracking.annotate_run(
                config,
                run_id,
                {"reprolab.target_met": str(not missed).lower(), "reprolab.target_missed": "; ".join(missed) or "-"},
                [own],
            )
        after = config.audit.after
        if after in run_ids:
            tracking.register_model(
                config,
                run_ids[after],
                {"reprolab.preset": after, "reprolab.target_met": str(summary[after]["target_met"]).lower()},
            )
        names = ["comparison.md", "summary.json", *FIGURES.values()]
        with tracking.summary_run(
            config,
            "report",
            "report",
            {
                "reprolab.dataset_digest": next(iter(digests)),
                **{f"reprolab.run.{preset}": run_id for preset, run_id in run_ids.items()},
            },
        ) as report_run:
            tracking.finish_summary(
                config,
                report_run,
                [built / name for name in names],
                "report",
                "Comparison of " + ", ".join(f"{p} (run {r})" for p, r in run_ids.items()),
            )
        with Outputs() as outputs:
            for name in names:
                outputs.copy(REPORTS_DIR / name, built / name)
    print(markdown)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
