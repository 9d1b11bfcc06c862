"""Building a dataset as the configuration says, writing it as the prepared file with its
source fingerprint, and reading it back: a file that is missing, damaged, not the pinned one,
or built from another source than the configuration's is refused.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from reprolab.config import DataConfig, DataSource, Normalize, to_dict
from reprolab.data.dataset import (
    FORMAT,
    SOURCE_KEY,
    SPLITS,
    WARNINGS_KEY,
    DataError,
    Dataset,
    Split,
    content_digest,
    padding_warnings,
)
from reprolab.data.folds import fold_arrays
from reprolab.data.synthetic import generate_synthetic
from reprolab.data.user_file import file_sha256, not_a_file, read_user_file
from reprolab.entrypoint import one_line
from reprolab.files import Outputs, npz_writer


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
    if config.fold is None:
        settings.pop("fold", None)  # likewise
    if config.source is DataSource.npz:
        assert config.user_file is not None
        path = Path(config.user_file)
        if not path.is_file():
            raise DataError(f"data.user_file: {path} {not_a_file(path)}")
        settings["user_file_sha256"] = file_sha256(path)
    else:
        for key in ("user_file", "layout", "padding", "val_fraction", "test_fraction", "split_seed"):
            if not (key == "split_seed" and config.fold):  # which folds the seed draws
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
    """The dataset, generated or read as the configuration says, checked against the pin; with
    `data.fold`, that fold of it (`reprolab.data.folds`), the pin checked on the whole."""
    if config.source is DataSource.synthetic:
        assert config.generator is not None  # DataConfig.check
        raw = generate_synthetic(config.generator)
    else:
        raw = read_user_file(config)
    padding = padding_warnings(np.concatenate([raw[f"X_{s}"] for s in SPLITS]))
    arrays = standardized(raw) if config.normalize is Normalize.standard else raw
    digest = content_digest(arrays)
    check_digest(digest, config, f"the {config.name} dataset built here")
    if config.fold is not None:
        arrays = fold_arrays(raw, config.fold, config.split_seed)
        arrays = standardized(arrays) if config.normalize is Normalize.standard else arrays
        digest = content_digest(arrays)
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
