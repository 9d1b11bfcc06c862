"""The DVC stages: prepare -> train -> evaluate -> report, each reading the resolved params.yaml.

`dvc.yaml` calls these through `reprolab stage <name>`. Each stage writes its files through a
temporary name and renames them into place, so a failed stage leaves no half-written file.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from reprolab import data as datasets
from reprolab import tracking
from reprolab.config import (Config, ConfigError, ModelConfig, RunConfig, compose_raw, read_params, to_dict,
                             validate)
from reprolab.files import atomic_write
from reprolab.models import SequenceClassifier, build_model
from reprolab.report import meets_target, pipeline_report, plot_confusion, plot_learning_curves
from reprolab.training import HISTORY_KEYS, evaluate, predict, train

PARAMS_FILE = Path("params.yaml")
RESULTS_DIR = Path("results")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")


def run_dir(preset: str) -> Path:
    return RESULTS_DIR / preset


def model_file(preset: str) -> Path:
    return MODELS_DIR / f"{preset}.pt"


def load_stage_params(path: Path = PARAMS_FILE, conf_dir: Path = Path("conf")) -> Config:
    """params.yaml, validated; refused if it is not what composing `conf/` gives.

    Inside `dvc exp run` (DVC_EXP_NAME is set) DVC has just composed params.yaml from conf/
    and the `-S` overrides, so it is current by construction. Anywhere else a difference means
    conf/ was edited after the last composition, and training on params.yaml would be stale.
    """
    on_disk = read_params(path)
    config = validate(on_disk)
    if os.environ.get("DVC_EXP_NAME") or not (conf_dir / "config.yaml").is_file():
        return config
    difference = _first_difference(on_disk, compose_raw([], conf_dir))
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
        trained = train(run, data)
        save_model(trained.model, run, data, model_file(preset))
        write_csv(run_dir(preset) / "history.csv", trained.history, ["epoch", *HISTORY_KEYS])
        tracked.log_training(trained, data)
        summary = {"preset": preset, "seed": run.seed, "mlflow_run_id": tracked.run_id,
                   "dataset_digest": data.digest, **trained.fit_summary()}
        write_json(run_dir(preset) / "train.json", summary)
    return summary


def confusion_matrix(actual: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts with rows = actual class, columns = predicted class."""
    counts = torch.bincount(actual * num_classes + predicted, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).tolist()


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
    tracking.log_report(config, [REPORTS_DIR / "comparison.md", curves, REPORTS_DIR / "summary.json"],
                        {row["preset"]: row["mlflow_run_id"] for row in rows}, next(iter(digests)))
    return markdown

