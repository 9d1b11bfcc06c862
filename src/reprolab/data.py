"""Datasets: the seeded synthetic task or a user's `.npz`, checked, and bound to their source.

Synthetic task. Sequences of `seq_len` steps with `n_features` features, x_t ~ N(0, I). A unit
vector u is drawn from the seed; the score s = sum_t w_t (x_t . u) has weights rising linearly
over time (w_t = t / (T - 1)), so the evidence for the label is spread over the sequence and
weighted towards its end. Only sequences with |s| >= margin * sd(s) are kept; the clean label
is 1[s > 0]; then exactly round(label_noise * n) labels of each split are flipped,
independently of x. The Bayes-optimal classifier is sign(s), so the best accuracy any model
can reach on a split is the fraction of labels that were not flipped.

A prepared dataset is one `.npz` file with arrays `X_<split>` (float32 [N, T, F]; the steps of a
shorter sequence that are padding are NaN, at the end), `y_<split>` (int64 labels 0..K-1), for
the synthetic task `flipped_<split>`, and `source`: the fingerprint of what it was built from
(the generator settings, or the user file's bytes and the split settings). Its content digest
is a SHA-256 over the data arrays' names, dtypes, shapes and bytes (not `source`), so it does not
depend on the container format. Reading a prepared file checks both: the digest against
`data.expected_digest` when one is pinned, and the source against the current configuration, so
a file built from other data or other settings is never used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from reprolab.config import DataConfig, DataSource, GeneratorConfig, Layout, Normalize, Padding, to_dict
from reprolab.entrypoint import UserError, one_line
from reprolab.files import Outputs, npz_writer

SPLITS = ("train", "val", "test")
SOURCE_KEY = "source"
WARNINGS_KEY = "warnings"  # what the inputs as given warned of (`padding_warnings`)
METADATA_KEYS = (SOURCE_KEY, WARNINGS_KEY)  # kept in a prepared file, outside its content digest
FORMAT = 2  # bump when the preparation changes what a source gives


class DataError(UserError, ValueError):
    """A dataset that is missing, malformed, or not the one the configuration asks for."""


@dataclass
class Split:
    """One split: inputs [N, T, F] float32 (NaN steps are padding), labels [N] int64, and for
    the synthetic task which labels were flipped."""

    X: np.ndarray
    y: np.ndarray
    flipped: Optional[np.ndarray] = None

    @property
    def bayes_accuracy(self) -> Optional[float]:
        """Best achievable accuracy on this split (known for the synthetic task only)."""
        return None if self.flipped is None else float(1.0 - self.flipped.mean())

    @property
    def lengths(self) -> np.ndarray:
        """Each sequence's number of real (not padding) steps."""
        return (~np.isnan(self.X).all(axis=2)).sum(axis=1)


@dataclass
class Dataset:
    """A checked dataset: its splits, content digest, source fingerprint and file."""

    name: str
    splits: dict[str, Split]
    digest: str
    source: str
    path: Optional[Path] = None
    input_warnings: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        return int(self.splits["train"].X.shape[2])

    @property
    def num_classes(self) -> int:
        return int(self.splits["train"].y.max()) + 1

    def labels(self) -> dict[str, np.ndarray]:
        """Each split's true classes."""
        return {name: split.y for name, split in self.splits.items()}

    @functools.cached_property
    def warnings(self) -> list[str]:
        """What in the data would mislead a result without an error: `padding_warnings` (of the
        inputs as given) and `data_warnings`."""
        return self.input_warnings + data_warnings(self.splits)

    def summary(self) -> dict:
        """Sizes, sequence lengths, class counts, (when known) the Bayes limit per split, and
        the data's warnings."""
        lengths = np.concatenate([split.lengths for split in self.splits.values()])
        out: dict = {
            "name": self.name,
            "digest": self.digest,
            "source": self.source,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "steps": int(self.splits["train"].X.shape[1]),
            "min_steps": int(lengths.min()),
        }
        for name, split in self.splits.items():
            counts = np.bincount(split.y, minlength=self.num_classes)
            out[name] = {"size": len(split.y), "class_counts": [int(c) for c in counts]}
            if split.bayes_accuracy is not None:
                out[name]["bayes_accuracy"] = split.bayes_accuracy
        out["warnings"] = self.warnings
        return out


# -- what the data can mislead about -------------------------------------------------------------

ZERO_TAIL_STEPS = 2  # a sequence "ends in zeros" from this many all-zero final steps
ZERO_TAIL_SHARE = 0.2  # warn when at least this share of the sequences do


def _trailing_zero_steps(X: np.ndarray) -> np.ndarray:
    """Per sequence, how many of its last real (not NaN) steps are zero in every feature."""
    padding = np.isnan(X).all(axis=2)
    blank = padding | (X == 0).all(axis=2)
    run = np.cumprod(blank[:, ::-1], axis=1).sum(axis=1)  # trailing steps that are zero or NaN
    return run - padding.sum(axis=1)


def padding_warnings(X: np.ndarray) -> list[str]:
    """Sequences padded with zeros at the end (the model reads the zeros as data). Checked on the
    inputs as given, before any scaling moves the zeros."""
    zeros = _trailing_zero_steps(X)
    padded = zeros >= ZERO_TAIL_STEPS
    if padded.mean() < ZERO_TAIL_SHARE:
        return []
    share = zeros[padded].sum() / (~np.isnan(X).all(axis=2)).sum()
    return [
        f"{padded.sum()} of {len(X)} sequences end in {ZERO_TAIL_STEPS} or more all-zero steps ({share:.0%} of "
        f"all steps): if that is padding, give `lengths` in the file or pad with NaN, or the model reads the "
        f"zeros as data (a set padded that way trained to near chance)"
    ]


def data_warnings(splits: dict[str, Split]) -> list[str]:
    """Sequences of validation or test that are copies of training ones (their accuracy measures
    memory), and classes missing from a split."""
    warnings = []
    seen = {hashlib.sha1(row.tobytes()).digest() for row in splits["train"].X}
    for name in ("val", "test"):
        copies = sum(hashlib.sha1(row.tobytes()).digest() in seen for row in splits[name].X)
        if copies:
            warnings.append(
                f"{copies} of {len(splits[name].X)} {name} sequences are exact copies of training sequences: "
                f"{name} accuracy then measures memory; remove the duplicates before splitting"
            )
    classes = int(max(split.y.max() for split in splits.values())) + 1
    for name, split in splits.items():
        missing = np.flatnonzero(np.bincount(split.y, minlength=classes) == 0)
        if len(missing):
            several = len(missing) > 1
            warnings.append(
                f"{'classes' if several else 'class'} {', '.join(map(str, missing))} {'have' if several else 'has'} "
                f"no sequence in the {name} split: its accuracy says nothing about {'them' if several else 'it'}; "
                f"more data of {'those classes' if several else 'that class'}, or other data.val_fraction and "
                f"data.test_fraction, fix it"
            )
    return warnings


# -- the synthetic task ------------------------------------------------------------------------


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
        flipped[rng.choice(size, size=round(spec.label_noise * size), replace=False)] = True
        arrays[f"X_{split}"] = X.astype(np.float32)
        arrays[f"y_{split}"] = clean ^ flipped.astype(np.int64)
        arrays[f"flipped_{split}"] = flipped
    return arrays


# -- a user's file ---------------------------------------------------------------------------


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


def standardized(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every split's X scaled per feature by the mean and standard deviation of the training
    split's real (not NaN) steps, so that nothing of validation or test leaks into training;
    a constant feature is only centred."""
    train = arrays["X_train"].reshape(-1, arrays["X_train"].shape[2]).astype(np.float64)
    mean, sd = np.nanmean(train, axis=0), np.nanstd(train, axis=0)
    sd[sd == 0] = 1.0
    out = dict(arrays)
    for split in SPLITS:
        out[f"X_{split}"] = ((arrays[f"X_{split}"] - mean) / sd).astype(np.float32)
    return out


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


# -- identity --------------------------------------------------------------------------------


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the data arrays' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        if key in METADATA_KEYS:
            continue
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def source_fingerprint(config: DataConfig) -> str:
    """What the dataset is built from: the generator settings, or the user file's bytes and the
    settings that shape its splits. The file's path and the dataset's name do not count."""
    settings = {
        key: value
        for key, value in to_dict(config).items()
        if key not in ("name", "prepared_path", "expected_digest", "target", "user_file")
    }
    if config.normalize is Normalize.none:
        settings.pop("normalize")  # as before the choice existed: prepared files stay valid
    if config.source is DataSource.npz:
        assert config.user_file is not None
        path = Path(config.user_file)
        if not path.is_file():
            raise DataError(f"data.user_file: {path} {not_a_file(path)}")
        settings["user_file_sha256"] = file_sha256(path)
    else:
        for key in ("user_file", "layout", "padding", "val_fraction", "test_fraction", "split_seed"):
            settings.pop(key, None)
    settings["format"] = FORMAT
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def check_digest(digest: str, config: DataConfig, what: str) -> None:
    """Stop unless `digest` is the one pinned in `data.expected_digest` (when one is pinned)."""
    if config.expected_digest and digest != config.expected_digest:
        raise DataError(
            f"{what} has digest {digest[:12]}…, but data.expected_digest pins "
            f"{config.expected_digest[:12]}…: this is not the dataset the results were made on. "
            f"Restore it with `dvc pull` / `dvc checkout`, or, if you changed the dataset on "
            f"purpose, set data.expected_digest={digest}"
        )


def build(config: DataConfig) -> Dataset:
    """The dataset, generated or read as the configuration says, checked against the pin."""
    if config.source is DataSource.synthetic:
        assert config.generator is not None  # DataConfig.check
        arrays = generate_synthetic(config.generator)
    else:
        arrays = read_user_file(config)
    padding = padding_warnings(np.concatenate([arrays[f"X_{s}"] for s in SPLITS]))
    if config.normalize is Normalize.standard:
        arrays = standardized(arrays)
    digest = content_digest(arrays)
    check_digest(digest, config, f"the {config.name} dataset built here")
    return _to_dataset(
        config.name, arrays | {WARNINGS_KEY: np.array(padding, dtype=str)}, digest, source_fingerprint(config), None
    )


def prepare_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    """What a prepared file holds: the splits' arrays and the source fingerprint."""
    arrays = {f"{kind}_{s}": getattr(split, kind) for s, split in dataset.splits.items() for kind in ("X", "y")}
    arrays |= {f"flipped_{s}": split.flipped for s, split in dataset.splits.items() if split.flipped is not None}
    arrays[SOURCE_KEY] = np.array(dataset.source)
    arrays[WARNINGS_KEY] = np.array(dataset.input_warnings, dtype=str)
    return arrays


def prepare(config: DataConfig, path: Optional[Path | str] = None, outputs: Optional[Outputs] = None) -> Dataset:
    """Build the dataset and write it with its source fingerprint, atomically (or as one of
    `outputs`, renamed into place with the others)."""
    dataset = build(config)
    dataset.path = Path(path or config.prepared_path)
    if outputs is not None:
        outputs.add(dataset.path, npz_writer(prepare_arrays(dataset)))
    else:
        with Outputs() as own:
            own.add(dataset.path, npz_writer(prepare_arrays(dataset)))
    return dataset


def load(config: DataConfig, path: Optional[Path | str] = None) -> Dataset:
    """Read a prepared dataset; refuse one that is missing, damaged, not the pinned one, or
    built from another source than the configuration's."""
    target = Path(path or config.prepared_path)
    # --force: DVC trusts its record of a file that its cache shares, and would skip the stage.
    rebuild = "rebuild it with `dvc repro --force prepare` (or `reprolab prepare`)"
    if not target.is_file():
        raise DataError(f"{target} not found: {rebuild}")
    try:
        with np.load(target, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{target} is damaged ({one_line(error)}): {rebuild}") from error
    missing = [f"{kind}_{s}" for s in SPLITS for kind in ("X", "y") if f"{kind}_{s}" not in arrays]
    if missing:
        raise DataError(f"{target} lacks arrays {', '.join(missing)}: {rebuild}")
    digest = content_digest(arrays)
    check_digest(digest, config, str(target))
    stored = str(arrays[SOURCE_KEY]) if SOURCE_KEY in arrays else "none"
    current = source_fingerprint(config)
    if stored != current:
        raise DataError(
            f"{target} was built from another source than data.{_source_key(config)} gives now "
            f"(the file or its settings changed): {rebuild}"
        )
    return _to_dataset(config.name, arrays, digest, current, target)


def _source_key(config: DataConfig) -> str:
    return "generator" if config.source is DataSource.synthetic else f"user_file ({config.user_file})"


def dataset_for(config: DataConfig) -> Dataset:
    """For commands outside the pipeline: the prepared file when it was built from the current
    source, else the dataset built afresh in memory (the pipeline's file is left alone)."""
    try:
        return load(config)
    except DataError:
        return build(config)


def _to_dataset(name: str, arrays: dict[str, np.ndarray], digest: str, source: str, path: Optional[Path]) -> Dataset:
    splits = {s: Split(X=arrays[f"X_{s}"], y=arrays[f"y_{s}"], flipped=arrays.get(f"flipped_{s}")) for s in SPLITS}
    warnings = [str(w) for w in arrays.get(WARNINGS_KEY, np.array([], dtype=str))]
    return Dataset(name=name, splits=splits, digest=digest, source=source, path=path, input_warnings=warnings)
