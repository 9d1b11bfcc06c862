"""The DVC stages, one module each, run from dvc.yaml as `python -m reprolab.stages.<name>`:

    check_params -> prepare -> train@<preset> -> evaluate@<preset> -> report
                           \\-> audit

Each stage reads the resolved params.yaml and writes the outputs dvc.yaml declares for it, all
of them or none (`reprolab.files.Outputs`). The paths of those outputs are defined here, once.
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")  # users' data files, a dependency of `prepare` (docs/your-data.md)
RESULTS_DIR = Path("results")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
AUDIT_DIR = REPORTS_DIR / "audit"
DATA_SUMMARY = RESULTS_DIR / "data.json"


def run_dir(preset: str) -> Path:
    return RESULTS_DIR / preset


def model_file(preset: str) -> Path:
    return MODELS_DIR / f"{preset}.npz"


def fit_file(preset: str) -> Path:
    """What training gives: the metrics on every split, the fit summary, the MLflow run id."""
    return run_dir(preset) / "train.json"


def history_file(preset: str) -> Path:
    return run_dir(preset) / "history.csv"


def predictions_file(preset: str) -> Path:
    """The test split's actual and predicted classes (DVC's confusion plot)."""
    return run_dir(preset) / "test_predictions.csv"


def metrics_file(preset: str) -> Path:
    return run_dir(preset) / "metrics.json"


# What the files one stage writes and another reads back must hold (`reprolab.files`).
NUMBER = (int, float)
FIT_SHAPE = {
    "preset": str,
    "seed": int,
    "mlflow_run_id": (str, type(None)),
    "dataset_digest": str,
    "metrics": {f"{split}_{kind}": NUMBER for split in ("train", "val", "test") for kind in ("loss", "accuracy")},
    "best_epoch": int,
    "epochs_run": int,
}
PREDICTION_COLUMNS = {"actual": int, "predicted": int}
DATA_SUMMARY_SHAPE = {"name": str, "digest": str, "num_classes": int, "val": {"size": int}}
