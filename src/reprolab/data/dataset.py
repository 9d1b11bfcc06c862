"""A dataset: its splits, its content digest (a SHA-256 over the data arrays' names, dtypes,
shapes and bytes, so it does not depend on the container format), and what its inputs warn
of (sequences that end in zeros: padding that was not marked).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from reprolab.entrypoint import UserError

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
