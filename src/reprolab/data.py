"""The fixed dataset: a seeded synthetic sequence task, or a user's `.npz`, verified by digest.

Synthetic task. Sequences of `seq_len` steps with `n_features` features, x_t ~ N(0, I). A unit
vector u is drawn from the seed; the score s = sum_t w_t (x_t . u) has weights rising linearly
over time (w_t = t / (T - 1)), so the evidence for the label is spread over the sequence and
weighted towards its end. Only sequences with |s| >= margin * sd(s) are kept; the clean label
is 1[s > 0]; then exactly round(label_noise * n) labels of each split are flipped,
independently of x. The Bayes-optimal classifier is sign(s), so the best accuracy any model
can reach on a split is the fraction of labels that were not flipped.

A prepared dataset is one `.npz` file with arrays `X_<split>`, `y_<split>` (and `flipped_<split>`
for the synthetic task). Its content digest is a SHA-256 over the arrays' names, dtypes,
shapes and bytes, so it does not depend on the container format.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from reprolab.config import DataConfig, GeneratorConfig, UserError
from reprolab.files import atomic_write

SPLITS = ("train", "val", "test")


class DataError(UserError, ValueError):
    """A dataset that is missing, malformed, or not the one the configuration pins."""


@dataclass
class Split:
    """One split: inputs [N, T, F] float32, labels [N] int64, and which labels were flipped."""

    X: np.ndarray
    y: np.ndarray
    flipped: Optional[np.ndarray] = None

    @property
    def bayes_accuracy(self) -> Optional[float]:
        """Best achievable accuracy on this split (synthetic task only)."""
        return None if self.flipped is None else float(1.0 - self.flipped.mean())


@dataclass
class Dataset:
    """A verified dataset: its splits, its content digest and where it was read from."""

    name: str
    splits: dict[str, Split]
    digest: str
    path: Optional[Path] = None

    @property
    def num_features(self) -> int:
        return int(self.splits["train"].X.shape[2])

    @property
    def num_classes(self) -> int:
        return int(max(int(split.y.max()) for split in self.splits.values()) + 1)

    def summary(self) -> dict:
        """Sizes, class balance and Bayes limit per split, as plain values."""
        out: dict = {"name": self.name, "digest": self.digest, "num_features": self.num_features,
                     "seq_len": int(self.splits["train"].X.shape[1]), "num_classes": self.num_classes}
        for name, split in self.splits.items():
            out[name] = {"size": int(len(split.y)), "positive_rate": float(split.y.mean()),
                         "bayes_accuracy": split.bayes_accuracy}
        return out


def generate_synthetic(spec: GeneratorConfig) -> dict[str, np.ndarray]:
    """Draw the synthetic task's splits (train, val, test, in that order) from `spec.seed`."""
    rng = np.random.default_rng(spec.seed)
    direction = rng.standard_normal(spec.n_features)
    direction /= np.linalg.norm(direction)
    weights = np.arange(spec.seq_len) / (spec.seq_len - 1)
    threshold = spec.margin * np.sqrt(np.sum(weights**2))  # sd(s): each x_t . u is N(0, 1)
    arrays: dict[str, np.ndarray] = {}
    for split, size in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        kept_X, kept_s, count = [], [], 0
        while count < size:
            X = rng.standard_normal((2 * size, spec.seq_len, spec.n_features))
            score = (X @ direction) @ weights
            keep = np.abs(score) >= threshold
            kept_X.append(X[keep])
            kept_s.append(score[keep])
            count += int(keep.sum())
        X = np.concatenate(kept_X)[:size]
        clean = (np.concatenate(kept_s)[:size] > 0).astype(np.int64)
        flipped = np.zeros(size, dtype=bool)
        flipped[rng.choice(size, size=int(round(spec.label_noise * size)), replace=False)] = True
        arrays[f"X_{split}"] = X.astype(np.float32)
        arrays[f"y_{split}"] = clean ^ flipped.astype(np.int64)
        arrays[f"flipped_{split}"] = flipped
    return arrays


def read_user_file(config: DataConfig) -> dict[str, np.ndarray]:
    """Read a user's `.npz` (X, y, or X_<split>/y_<split>) and split it if needed."""
    path = Path(config.user_file)
    if not path.is_file():
        raise DataError(f"data.user_file: {path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"data.user_file: {path} is not a readable .npz file ({error})") from error
    if all(f"X_{s}" in raw and f"y_{s}" in raw for s in SPLITS):
        arrays = {f"{kind}_{s}": raw[f"{kind}_{s}"] for s in SPLITS for kind in ("X", "y")}
    elif "X" in raw and "y" in raw:
        _check_pair(raw["X"], raw["y"], f"{path}")
        arrays = _split(raw["X"], raw["y"], config)
    else:
        raise DataError(f"data.user_file: {path} must hold arrays X and y, or X_train, y_train, "
                        f"X_val, y_val, X_test, y_test; found {sorted(raw) or 'none'}")
    validate_arrays(arrays, str(path))
    return {key: (value.astype(np.float32) if key.startswith("X_") else value.astype(np.int64))
            for key, value in arrays.items()}


def _split(X: np.ndarray, y: np.ndarray, config: DataConfig) -> dict[str, np.ndarray]:
    order = np.random.default_rng(config.split_seed).permutation(len(y))
    n_val = int(round(config.val_fraction * len(y)))
    n_test = int(round(config.test_fraction * len(y)))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {f"{kind}_{s}": arr[parts[s]] for s in SPLITS for kind, arr in (("X", X), ("y", y))}


def _check_pair(X: np.ndarray, y: np.ndarray, where: str) -> None:
    if X.ndim != 3:
        raise DataError(f"{where}: X must have shape [N, T, F], got shape {list(X.shape)}")
    if not np.issubdtype(X.dtype, np.floating):
        raise DataError(f"{where}: X must be a float array, got dtype {X.dtype}")
    if y.ndim != 1:
        raise DataError(f"{where}: y must have shape [N], got shape {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: y must be an integer array, got dtype {y.dtype}")
    if len(X) != len(y):
        raise DataError(f"{where}: X has {len(X)} sequences but y has {len(y)} labels")


def validate_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    """Reject wrong shapes or dtypes, NaN/inf, bad label values and empty splits."""
    shape = None
    for split in SPLITS:
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        _check_pair(X, y, f"{where} [{split}]")
        if len(y) == 0:
            raise DataError(f"{where}: the {split} split is empty; provide more data or change "
                            f"data.val_fraction / data.test_fraction")
        if not np.isfinite(X).all():
            raise DataError(f"{where}: X_{split} contains NaN or inf values")
        if y.min() < 0:
            raise DataError(f"{where}: labels must be 0..K-1, y_{split} has {int(y.min())}")
        if shape is not None and X.shape[1:] != shape:
            raise DataError(f"{where}: X_{split} has steps/features {list(X.shape[1:])}, "
                            f"other splits have {list(shape)}")
        shape = X.shape[1:]
    if len(np.unique(arrays["y_train"])) < 2:
        raise DataError(f"{where}: y_train holds a single class; a classifier needs at least two")


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def build_arrays(config: DataConfig) -> dict[str, np.ndarray]:
    """The dataset's arrays, generated or read as the configuration says."""
    if config.source == "synthetic":
        return generate_synthetic(config.generator)
    return read_user_file(config)


def check_digest(digest: str, config: DataConfig, what: str) -> None:
    """Stop unless `digest` is the one pinned in `data.expected_digest` (when one is pinned)."""
    if config.expected_digest and digest != config.expected_digest:
        raise DataError(
            f"{what} has digest {digest[:12]}…, but data.expected_digest pins "
            f"{config.expected_digest[:12]}…: this is not the dataset the results were made on. "
            f"Restore it with `dvc pull` / `dvc checkout`, or, if you changed the dataset on "
            f"purpose, set data.expected_digest={digest}")


def prepare(config: DataConfig, path: Optional[Path | str] = None) -> Dataset:
    """Build the dataset, check it against the pinned digest, write it atomically."""
    arrays = build_arrays(config)
    digest = content_digest(arrays)
    check_digest(digest, config, f"the {config.name} dataset built here")
    target = Path(path or config.prepared_path)
    write_npz(arrays, target)
    return _to_dataset(config.name, arrays, digest, target)


def load(config: DataConfig, path: Optional[Path | str] = None) -> Dataset:
    """Read a prepared dataset and verify its digest; a missing or changed file is refused."""
    target = Path(path or config.prepared_path)
    if not target.is_file():
        raise DataError(f"{target} not found: run `dvc repro prepare` (or `reprolab prepare`)")
    try:
        with np.load(target, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{target} is corrupted ({error}); rebuild it with `dvc repro prepare` "
                        f"or restore it with `dvc checkout`") from error
    missing = [f"{kind}_{s}" for s in SPLITS for kind in ("X", "y") if f"{kind}_{s}" not in arrays]
    if missing:
        raise DataError(f"{target} lacks arrays {missing}; rebuild it with `dvc repro prepare`")
    digest = content_digest(arrays)
    check_digest(digest, config, str(target))
    return _to_dataset(config.name, arrays, digest, target)


def _to_dataset(name: str, arrays: dict[str, np.ndarray], digest: str, path: Path) -> Dataset:
    splits = {s: Split(X=arrays[f"X_{s}"], y=arrays[f"y_{s}"], flipped=arrays.get(f"flipped_{s}"))
              for s in SPLITS}
    return Dataset(name=name, splits=splits, digest=digest, path=path)


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write arrays as an `.npz` whose bytes depend only on the arrays, atomically.

    `np.savez` stamps each member with the current time, so the same data would give a new
    file (and a new DVC hash) on every run; fixed timestamps keep the file byte-identical.
    """
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]),
                                              allow_pickle=False)
    atomic_write(path, write)
