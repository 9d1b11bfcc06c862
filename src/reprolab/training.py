"""Training and evaluation: seeded, deterministic, early stopping on a validation metric."""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from reprolab.config import RunConfig
from reprolab.data import Dataset, Split
from reprolab.models import SequenceClassifier, build_model

HISTORY_KEYS = ("train_loss", "train_accuracy", "train_eval_accuracy", "val_loss", "val_accuracy")


def seed_everything(seed: int) -> None:
    """The one place that makes a run repeatable: seeds, deterministic kernels, one thread.

    One intra-op thread keeps float reductions in a fixed order (bit-identical reruns on the
    same machine) and lets parallel runs use the other cores; these models are too small to
    gain from more.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


@dataclass
class TrainResult:
    """A trained model (best weights restored) with its per-epoch history and fit summary."""

    model: SequenceClassifier
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    wall_time_s: float

    def fit_summary(self) -> dict:
        return {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "stopped_early": self.stopped_early, "wall_time_s": self.wall_time_s}


def _tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(split.X), torch.from_numpy(split.y)


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Class logits in eval mode (dropout off)."""
    was_training = model.training
    model.eval()
    logits = model(torch.as_tensor(X))
    model.train(was_training)
    return logits


def evaluate_split(model: nn.Module, split: Split) -> dict[str, float]:
    """Loss and accuracy on one split, in eval mode."""
    X, y = _tensors(split)
    logits = predict(model, X)
    return {"loss": float(F.cross_entropy(logits, y)),
            "accuracy": float((logits.argmax(dim=1) == y).float().mean())}


def evaluate(model: nn.Module, data: Dataset) -> dict[str, float]:
    """`<split>_loss` and `<split>_accuracy` for train, val and test, in eval mode."""
    metrics = {}
    for name, split in data.splits.items():
        for key, value in evaluate_split(model, split).items():
            metrics[f"{name}_{key}"] = value
    return metrics


def confusion_matrix(actual: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts with rows = actual class, columns = predicted class."""
    counts = torch.bincount(actual * num_classes + predicted, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).tolist()


def _improved(value: float, best: float, monitor: str, min_delta: float) -> bool:
    if monitor == "val_loss":
        return value < best - min_delta
    return value > best + min_delta


def train(run: RunConfig, data: Dataset, progress: bool = True,
          on_epoch: Optional[Callable[[dict[str, float]], None]] = None) -> TrainResult:
    """Train the run's model on `data`; stop early (restoring the best weights) if configured.

    `on_epoch` receives each epoch's record; `progress` shows a bar on a terminal only.
    """
    started = time.perf_counter()
    seed_everything(run.seed)
    model = build_model(run.model, input_size=data.num_features, num_classes=data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay)
    X_train, y_train = _tensors(data.splits["train"])
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=run.train.batch_size or len(y_train),
                        shuffle=True, generator=torch.Generator().manual_seed(run.seed))
    stopping = run.train.early_stopping
    best_value = math.inf if stopping.monitor == "val_loss" else -math.inf
    best_epoch, best_state, stopped_early = 0, None, False
    history: list[dict[str, float]] = []

    bar = tqdm(range(1, run.train.max_epochs + 1), desc=f"{run.preset} seed={run.seed}",
               disable=None if progress else True, leave=False, unit="epoch")
    for epoch in bar:
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for X, y in loader:
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
        train_eval = evaluate_split(model, data.splits["train"])
        val = evaluate_split(model, data.splits["val"])
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "train_eval_accuracy": train_eval["accuracy"], "val_loss": val["loss"],
                  "val_accuracy": val["accuracy"]}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(train=f"{train_eval['accuracy']:.3f}", val=f"{val['accuracy']:.3f}")

        if not stopping.enabled:
            best_epoch = epoch
            continue
        if _improved(record[stopping.monitor], best_value, stopping.monitor, stopping.min_delta):
            best_value, best_epoch = record[stopping.monitor], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= stopping.patience:
            stopped_early = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model=model, history=history, best_epoch=best_epoch, epochs_run=len(history),
                       stopped_early=stopped_early, wall_time_s=time.perf_counter() - started)
