"""A user's `.npz` file read into splits: its arrays checked (shapes, finite values, labels),
its padding marked, its layout made (batch, time, features), split when it holds one set.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from reprolab.config import DataConfig, Layout, Padding
from reprolab.data.dataset import SPLITS, DataError
from reprolab.entrypoint import one_line


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def not_a_file(path: Path) -> str:
    """Why `path` is not a file to read: missing, or which kind of thing stands there."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as error:
        return f"cannot be read ({one_line(error)})"
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
    )
    return f"is {kind}, not a file: give the path of your .npz file"


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array in an `.npz`, or one line saying why it cannot be read."""
    if not path.is_file():
        raise DataError(f"{what}: {path} {not_a_file(path)}")
    how = "write it with np.savez(path, X=X, y=y)"
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(f"{what}: {path} holds a single array (np.save), not an .npz archive; {how}")
    if magic[:4] != b"PK\x03\x04":
        raise DataError(f"{what}: {path} is not a NumPy .npz archive (an .npz is a zip file); {how}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as error:
        if "pickle" in str(error) or "Object arrays" in str(error):
            raise DataError(
                f"{what}: {path} holds Python objects (e.g. lists of different lengths); save plain "
                f"numeric arrays instead (pad shorter sequences with NaN)"
            ) from error
        raise DataError(f"{what}: {path} is not a readable .npz archive ({one_line(error)}); {how}") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{what}: {path} is not a readable .npz archive ({one_line(error)}); {how}") from error


def read_user_file(config: DataConfig) -> dict[str, np.ndarray]:
    """A user's `.npz` as checked, split arrays (see `conf/data/npz.yaml` for what it may hold)."""
    assert config.user_file is not None
    path = Path(config.user_file)
    raw = read_npz(path, "data.user_file")
    where = str(path)
    if all(f"X_{s}" in raw and f"y_{s}" in raw for s in SPLITS):
        reads: dict[str, Callable[[], np.ndarray]] = {}
        for s in SPLITS:
            X, lengths = raw[f"X_{s}"], raw.get(f"lengths_{s}")
            reads[f"X_{s}"] = functools.partial(_inputs, X, lengths, config, f"{where} [X_{s}]")
            reads[f"y_{s}"] = functools.partial(_labels, raw[f"y_{s}"], len(X), f"{where} [y_{s}]")
        arrays = _checked(dict(sorted(reads.items(), key=lambda item: item[0][0])), where)
    elif "X" in raw and "y" in raw:
        checked = _checked(
            {
                "X": lambda: _inputs(raw["X"], raw.get("lengths"), config, f"{where} [X]"),
                "y": lambda: _labels(raw["y"], len(raw["X"]), f"{where} [y]"),
            },
            where,
        )
        arrays = _split(checked["X"], checked["y"], config)
    else:
        raise DataError(
            f"{where} must hold arrays X and y, or X_train, y_train, X_val, y_val, X_test, "
            f"y_test; found {', '.join(sorted(raw)) or 'none'}"
        )
    check_arrays(arrays, where)
    return arrays


def _checked(reads: dict[str, Callable[[], np.ndarray]], where: str) -> dict[str, np.ndarray]:
    """Each array read and checked, and the label values too: every problem found, in one
    message, rather than one per attempt (a transposed X and 1-based labels at once)."""
    arrays, problems = {}, []
    for name, read in reads.items():
        try:
            arrays[name] = read()
        except DataError as error:
            problems.append(str(error))
    labels = [arrays[name] for name in reads if name.startswith("y") and name in arrays]
    if problems and len(labels) == sum(name.startswith("y") for name in reads) and sum(map(len, labels)):
        try:
            _label_values(labels, where)
        except DataError as error:
            problems.append(str(error))
    if problems:
        raise DataError("; and ".join(problems))
    return arrays


def _inputs(X: np.ndarray, lengths: Optional[np.ndarray], config: DataConfig, where: str) -> np.ndarray:
    """X as float32 [N, T, F] with NaN padding at the end of each shorter sequence."""
    if X.ndim == 2:
        raise DataError(
            f"{where}: X has shape {list(X.shape)}, but needs [N, steps, features]; for one "
            f"feature per step use X[:, :, None]"
        )
    if X.ndim != 3:
        raise DataError(f"{where}: X must have shape [N, steps, features], got {list(X.shape)}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise DataError(f"{where}: X must hold numbers, got dtype {X.dtype}")
    if len(X) == 0 or X.shape[1] == 0 or X.shape[2] == 0:
        raise DataError(f"{where}: X has shape {list(X.shape)}: it is empty; it needs sequences, steps and features")
    if config.layout is Layout.nft:
        X = X.transpose(0, 2, 1)
    elif config.layout is Layout.auto and X.shape[1] == 1 and X.shape[2] > 1:
        raise DataError(
            f"{where}: X has shape {list(X.shape)}: one step of {X.shape[2]} features per sequence, "
            f"which is what [N, features, steps] looks like (e.g. [N, 1, T] for one channel). Set "
            f"data.layout=nft to read it that way, or data.layout=ntf if each sequence really is one step"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        cast = X.astype(np.float32)
    if np.isinf(cast).any():  # checked after the cast: float64 values beyond float32's range
        overflow = bool(np.isfinite(X).all())
        raise DataError(
            f"{where}: X "
            + (
                "has values beyond float32's range (|x| > 3.4e38); rescale your data"
                if overflow
                else "contains inf values"
            )
        )
    if lengths is not None:
        cast = _pad_from_lengths(cast, lengths, config.padding, where)
    return _left_align(cast, where)


def _pad_from_lengths(X: np.ndarray, lengths: np.ndarray, padding: Padding, where: str) -> np.ndarray:
    steps = X.shape[1]
    if lengths.shape != (len(X),) or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(
            f"{where}: lengths must be an integer array with one entry per sequence ({len(X)}), "
            f"got dtype {lengths.dtype} shape {list(lengths.shape)}"
        )
    if lengths.min() < 1 or lengths.max() > steps:
        raise DataError(
            f"{where}: lengths must be in 1..{steps} (the steps of X), found {int(lengths.min())}..{int(lengths.max())}"
        )
    X = X.copy()
    index = np.arange(steps)[None, :]
    real = index < lengths[:, None] if padding is Padding.end else index >= steps - lengths[:, None]
    X[~real] = np.nan
    return X


def _left_align(X: np.ndarray, where: str) -> np.ndarray:
    """Move each sequence's real steps to the front; NaN steps (padding) go to the end.

    A step is padding when all its features are NaN; padding must sit at one end of a sequence.
    """
    padding = np.isnan(X).all(axis=2)
    if np.isnan(X[~padding]).any():
        row, step = (int(i) for i in np.argwhere(np.isnan(X).any(axis=2) & ~padding)[0])
        raise DataError(
            f"{where}: sequence {row}, step {step} has NaN in some features only; missing values are "
            f"not supported (NaN marks padding, and then every feature of the step is NaN)"
        )
    if not padding.any():
        return X
    real = ~padding
    lengths = real.sum(axis=1)
    if lengths.min() == 0:
        raise DataError(f"{where}: sequence {int(np.argmin(lengths))} is all padding (NaN); remove empty sequences")
    first = np.argmax(real, axis=1)
    last = real.shape[1] - 1 - np.argmax(real[:, ::-1], axis=1)
    gaps = lengths != last - first + 1
    if gaps.any():
        raise DataError(
            f"{where}: sequence {int(np.argmax(gaps))} has padding (NaN steps) between real steps; "
            f"padding must sit before or after a sequence's real steps"
        )
    steps = np.arange(real.shape[1])[None, :]
    kept = steps < lengths[:, None]
    index = np.where(kept, steps + first[:, None], 0)
    aligned = np.take_along_axis(X, index[:, :, None], axis=1)
    aligned[~kept] = np.nan
    return aligned


def _labels(y: np.ndarray, count: int, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{where}: y must have shape [N], got {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        hint = (
            " (they look like whole numbers: y.astype(int))"
            if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
            else " (two classes as True/False: y.astype(int))"
            if y.dtype == np.bool_
            else ""
        )
        raise DataError(f"{where}: labels must be integers 0..K-1, got dtype {y.dtype}{hint}")
    if len(y) != count:
        raise DataError(f"{where}: X has {count} sequences but y has {len(y)} labels")
    return y.astype(np.int64)


def _split(X: np.ndarray, y: np.ndarray, config: DataConfig) -> dict[str, np.ndarray]:
    """Stratified split: each class is shuffled with `split_seed` and divided by the fractions,
    so every class with at least one example keeps one in training."""
    rng = np.random.default_rng(config.split_seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = round(config.val_fraction * len(members))
        n_test = round(config.test_fraction * len(members))
        n_val, n_test = min(n_val, len(members) - 1), min(n_test, max(0, len(members) - 1 - n_val))
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    arrays = {}
    for split, chunks in parts.items():
        index = np.sort(np.concatenate(chunks))
        arrays[f"X_{split}"], arrays[f"y_{split}"] = X[index], y[index]
    return arrays


def check_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    """Splits that agree in steps and features, are not empty, and have labels 0..K-1 with every
    class present in training."""
    shape = arrays["X_train"].shape[1:]
    for split in SPLITS:
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if len(y) == 0:
            raise DataError(
                f"{where}: the {split} split is empty; provide more data or change "
                f"data.val_fraction / data.test_fraction"
            )
        if X.shape[2] != shape[1]:
            raise DataError(f"{where}: X_{split} has {X.shape[2]} features per step, X_train has {shape[1]}")
    labels = _label_values([arrays[f"y_{s}"] for s in SPLITS], where)
    train = np.unique(arrays["y_train"])
    if len(train) < 2:
        raise DataError(f"{where}: y_train holds a single class; a classifier needs at least two")
    missing = [int(label) for label in labels if label not in train]
    if missing:
        raise DataError(
            f"{where}: class {missing[0]} has no training example (every class needs some); "
            f"provide more data of it or lower data.val_fraction / data.test_fraction"
        )


def _label_values(ys: list[np.ndarray], where: str) -> np.ndarray:
    """The classes found in the label arrays, which must be 0..K-1."""
    labels = np.unique(np.concatenate(ys))
    found = _label_text(labels)
    if labels.min() == 1 and np.array_equal(labels, np.arange(1, len(labels) + 1)):
        raise DataError(f"{where}: labels are {found}: they must run 0..K-1; subtract 1 (y - 1)")
    if labels.min() < 0 or not np.array_equal(labels, np.arange(len(labels))):
        raise DataError(
            f"{where}: labels must be 0..K-1, found {found}; map them with np.unique(y, return_inverse=True)[1]"
        )
    return labels


def _label_text(labels: np.ndarray) -> str:
    if len(labels) >= 2 and np.array_equal(labels, np.arange(labels[0], labels[0] + len(labels))):
        return f"{labels[0]}..{labels[-1]}"
    shown = ", ".join(str(int(v)) for v in labels[:6])
    return "{" + shown + (", ..." if len(labels) > 6 else "") + "}"
