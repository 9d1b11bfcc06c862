"""Training and evaluation: seeded, deterministic, early stopping on a validation metric."""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from reprolab import numerics
from reprolab.data import content_digest
from reprolab.entrypoint import UserError
from reprolab.metrics import class_metrics, confusion_matrix
from reprolab.models import SequenceClassifier, build_model, save_arrays
from reprolab.results import RunResult

if TYPE_CHECKING:
    from reprolab.config import Config, RunConfig
    from reprolab.data import Dataset


class TrainingError(UserError, RuntimeError):
    """Training that cannot go on (it diverged, or the device asked for is absent)."""


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, or `auto` (cuda when present, else cpu)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device: cuda was asked for but torch sees no GPU here; use train.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int, device: torch.device) -> None:
    """The one place that makes a run repeatable: seeds, one thread, deterministic GPU kernels.

    On the CPU, one intra-op thread keeps float reductions in a fixed order, so reruns on the
    same machine are bit-identical (and parallel runs use the other cores; these models are too
    small to gain from more threads). On a GPU, `torch.use_deterministic_algorithms` picks
    deterministic kernels (raising on ops that have none) and cuBLAS needs a fixed workspace:
    the same GPU model, driver and library versions then repeat a run exactly, but its numbers
    differ from the CPU's. The flag is set for GPUs only: it changes no CPU kernel used here,
    and setting it imports torch's compiler configuration, which cost 1.6 s per process here.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    torch.set_num_threads(1)
    numerics.configure_torch(torch)  # the run-time half of compute.numerics (reprolab.numerics)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


@dataclass
class TrainResult:
    """A trained model (best weights restored, on the CPU) with its per-epoch history and fit summary."""

    model: SequenceClassifier
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    device: str
    kernels: Optional[dict] = None  # what computed it (`numerics.in_effect`), in the process that trained

    def fit_summary(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "wall_time_s": round(self.wall_time_s, 3),
        }


@dataclass
class Evaluation:
    """Loss and accuracy on every split (eval mode), and each split's predicted classes."""

    metrics: dict[str, float]
    predictions: dict[str, np.ndarray]


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Class logits in eval mode (dropout off), on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(X).to(device))
    model.train(was_training)
    return logits


def float32_digits(value: float) -> float:
    """A float32 result with the 7 significant digits it holds: 0.3629105 rather than
    0.36291053891181946, its float64 expansion, in every file and in MLflow."""
    return float(f"{value:.7g}")


def _loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    # Accuracy as an exact ratio of counts (float32's mean would show as 0.878000020980835).
    accuracy = int((logits.argmax(dim=1) == y).sum()) / len(y)
    return {"loss": float32_digits(float(F.cross_entropy(logits, y))), "accuracy": accuracy}


def evaluate(model: nn.Module, data: Dataset) -> Evaluation:
    """`<split>_loss`, `<split>_accuracy` and the class-balanced metrics (`class_metrics`) for
    train, val and test, and the predicted classes."""
    metrics, predictions = {}, {}
    for name, split in data.splits.items():
        logits = predict(model, split.X).cpu()
        predictions[name] = logits.argmax(dim=1).numpy()
        measured = _loss_and_accuracy(logits, torch.from_numpy(split.y))
        measured |= class_metrics(split.y, predictions[name], data.num_classes)
        for key, value in measured.items():
            metrics[f"{name}_{key}"] = value
    return Evaluation(metrics, predictions)


def _improved(value: float, best: float, monitor: str, min_delta: float) -> bool:
    if monitor == "val_loss":
        return value < best - min_delta
    return value > best + min_delta


def train(
    run: RunConfig, data: Dataset, progress: bool = True, on_epoch: Optional[Callable[[dict[str, float]], None]] = None
) -> TrainResult:
    """Train the run's model on `data`; stop early (restoring the best weights) if configured.

    `on_epoch` receives each epoch's record; `progress` shows a bar on a terminal only.
    """
    started = time.perf_counter()
    device = resolve_device(run.train.device.value)
    seed_everything(run.seed, device)
    model = build_model(run.model, input_size=data.num_features, num_classes=data.num_classes).to(device)
    # The fused Adam takes its square roots in torch's own code; the default one sends them to MKL.
    fused = True if numerics.current_mode() == numerics.PORTABLE else None
    optimizer = torch.optim.Adam(model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay, fused=fused)
    train_split, val_split = data.splits["train"], data.splits["val"]
    X_train, y_train = torch.from_numpy(train_split.X), torch.from_numpy(train_split.y)
    loader = DataLoader(
        TensorDataset(X_train, y_train),
        batch_size=run.train.batch_size or len(y_train),
        shuffle=True,
        generator=torch.Generator().manual_seed(run.seed),
    )
    on_device = {
        name: (torch.from_numpy(split.X).to(device), torch.from_numpy(split.y).to(device))
        for name, split in (("train", train_split), ("val", val_split))
    }
    stopping = run.train.early_stopping
    monitor = stopping.monitor.value
    best_value = math.inf if monitor == "val_loss" else -math.inf
    best_epoch, best_state, stopped_early = 0, None, False
    history: list[dict[str, float]] = []

    bar = tqdm(
        range(1, run.train.max_epochs + 1),
        desc=f"{run.preset} seed={run.seed}",
        disable=None if progress else True,
        leave=False,
        unit="epoch",
    )
    for epoch in bar:
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            logits = model(X)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            if run.train.grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), run.train.grad_clip_norm)
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(dim=1) == y).sum())
            seen += len(y)
        if not math.isfinite(loss_sum):
            raise TrainingError(
                f"training diverged at epoch {epoch} (the loss is {loss_sum / seen}): lower "
                f"train.lr, set train.grad_clip_norm, or rescale the data"
            )
        train_eval = _loss_and_accuracy(predict(model, on_device["train"][0]), on_device["train"][1])
        val = _loss_and_accuracy(predict(model, on_device["val"][0]), on_device["val"][1])
        record = {
            "epoch": epoch,
            "train_loss": float32_digits(loss_sum / seen),
            "train_accuracy": correct / seen,
            "train_eval_accuracy": train_eval["accuracy"],
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(train=f"{train_eval['accuracy']:.3f}", val=f"{val['accuracy']:.3f}")

        if not stopping.enabled:
            best_epoch = epoch
            continue
        if _improved(record[monitor], best_value, monitor, stopping.min_delta):
            best_value, best_epoch = record[monitor], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= stopping.patience:
            stopped_early = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.cpu().eval()
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        epochs_run=len(history),
        stopped_early=stopped_early,
        wall_time_s=time.perf_counter() - started,
        device=device.type,
        kernels=numerics.in_effect(),
    )


def run_one(
    config: Config,
    preset: str,
    seed: int,
    data: Dataset,
    progress: bool = True,
    on_epoch: Optional[Callable[[dict[str, float]], None]] = None,
) -> tuple[TrainResult, RunResult]:
    """Train `preset` of `config` with `seed` on `data` and evaluate it on every split."""
    trained = train(config.run_config(preset, seed), data, progress=progress, on_epoch=on_epoch)
    evaluation = evaluate(trained.model, data)
    result = RunResult(
        preset=preset,
        seed=seed,
        metrics=evaluation.metrics,
        fit=trained.fit_summary(),
        history=trained.history,
        dataset_digest=data.digest,
        predictions={split: values.tolist() for split, values in evaluation.predictions.items()},
        confusion=confusion_matrix(data.splits["test"].y, evaluation.predictions["test"], data.num_classes),
        weights_sha256=content_digest(save_arrays(trained.model)),
    )
    return trained, result
