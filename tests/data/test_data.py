"""The fixed dataset: generation, digest pinning, tamper detection, user .npz validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import CONF_DIR
from reprolab import data as datasets
from reprolab.config import DataConfig, load_config
from reprolab.data import DataError
from reprolab.files import npz_writer


@pytest.fixture
def small_data_config(tmp_path) -> DataConfig:
    return load_config(["data=synthetic_small", f"data.prepared_path={tmp_path / 'd.npz'}"], CONF_DIR).data


def test_pinned_digest_matches_what_this_machine_generates():
    """The fixed dataset pinned in conf/ is the one numpy generates here (else prepare stops)."""
    for name in ("synthetic", "synthetic_small"):
        config = load_config([f"data={name}"], CONF_DIR).data
        assert config.expected_digest, f"data/{name}.yaml pins no digest"
        assert datasets.build(config).digest == config.expected_digest


def test_synthetic_task_has_the_documented_properties():
    spec = load_config([], CONF_DIR).data.generator
    arrays = datasets.generate_synthetic(spec)
    for split, size in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        X, y, flipped = arrays[f"X_{split}"], arrays[f"y_{split}"], arrays[f"flipped_{split}"]
        assert X.shape == (size, spec.seq_len, spec.n_features) and X.dtype == np.float32
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        assert flipped.sum() == round(spec.label_noise * size)
        assert 0.35 < y.mean() < 0.65


def test_bayes_accuracy_is_one_minus_the_flip_rate(small_data_config):
    noisy = dataclasses.replace(
        small_data_config,
        expected_digest=None,
        generator=dataclasses.replace(small_data_config.generator, label_noise=0.25),
    )
    dataset = datasets.prepare(noisy)
    for split in dataset.splits.values():
        assert split.bayes_accuracy == pytest.approx(1 - split.flipped.mean())
        assert split.bayes_accuracy == pytest.approx(0.75, abs=0.01)


def test_prepare_writes_byte_identical_files(small_data_config, tmp_path):
    first = datasets.prepare(small_data_config, tmp_path / "a.npz")
    second = datasets.prepare(small_data_config, tmp_path / "b.npz")
    assert first.digest == second.digest == small_data_config.expected_digest
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert datasets.load(small_data_config, tmp_path / "a.npz").digest == first.digest


def test_a_changed_file_is_refused(small_data_config):
    dataset = datasets.prepare(small_data_config)
    arrays = datasets.prepare_arrays(dataset)
    arrays["y_val"] = arrays["y_val"].copy()
    arrays["y_val"][0] ^= 1
    npz_writer(arrays)(dataset.path)
    with pytest.raises(DataError, match=r"data\.expected_digest"):
        datasets.load(small_data_config)


def test_a_different_generator_is_refused_before_writing(small_data_config):
    other = dataclasses.replace(small_data_config, generator=dataclasses.replace(small_data_config.generator, seed=99))
    with pytest.raises(DataError, match=r"data\.expected_digest"):
        datasets.prepare(other)
    assert not (Path(other.prepared_path)).exists()


def test_corrupted_and_missing_files_are_clear_errors(small_data_config):
    with pytest.raises(DataError, match="not found"):
        datasets.load(small_data_config)
    dataset = datasets.prepare(small_data_config)
    dataset.path.write_bytes(dataset.path.read_bytes()[:200])
    with pytest.raises(DataError, match="damaged"):
        datasets.load(small_data_config)


def user_config(tmp_path, *overrides: str, **arrays) -> DataConfig:
    """The data config of a user's file holding `arrays` (written unless none are given)."""
    path = tmp_path / "user.npz"
    if arrays:
        np.savez(path, **arrays)
    return load_config(
        ["data=npz", f"data.user_file={path}", f"data.prepared_path={tmp_path / 'p.npz'}", *overrides], CONF_DIR
    ).data


def _good(n=50):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6, 3)).astype(np.float32), rng.integers(0, 2, n)


def test_user_file_is_split_and_prepared(tmp_path):
    X, y = _good()
    dataset = datasets.prepare(user_config(tmp_path, X=X, y=y))
    sizes = {s: len(split.y) for s, split in dataset.splits.items()}
    assert sizes == {"train": 30, "val": 10, "test": 10}
    assert dataset.splits["train"].bayes_accuracy is None


def test_user_file_with_its_own_splits(tmp_path):
    X, y = _good()
    config = user_config(
        tmp_path, X_train=X[:30], y_train=y[:30], X_val=X[30:40], y_val=y[30:40], X_test=X[40:], y_test=y[40:]
    )
    assert len(datasets.prepare(config).splits["val"].y) == 10


def _bad_cases():
    X, y = _good()
    nan, inf, negative = X.copy(), X.copy(), y.copy()
    nan[0, 0, 0], inf[1, 2, 0], negative[3] = np.nan, np.inf, -1
    return [
        ({"X": X[:, :, 0], "y": y}, r"needs \[N, steps, features\]; for one feature per step use X\[:, :, None\]"),
        ({"X": X.astype(str), "y": y}, "must hold numbers"),
        ({"X": X, "y": y.astype(np.float32)}, r"integers 0..K-1, got dtype float32 \(they look like whole"),
        ({"X": X, "y": y[:, None]}, r"shape \[N\]"),
        ({"X": X, "y": y[:-1]}, "50 sequences but y has 49"),
        ({"X": nan, "y": y}, "NaN in some features only"),
        ({"X": inf, "y": y}, "contains inf values"),
        ({"X": X, "y": negative}, "labels must be 0..K-1"),
        ({"X": X, "y": np.zeros_like(y)}, "single class"),
        ({"features": X}, "must hold arrays X and y"),
        ({"X": X[:2], "y": y[:2]}, "split is empty"),
    ]


@pytest.mark.parametrize("arrays, message", _bad_cases())
def test_user_file_validation(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        datasets.prepare(user_config(tmp_path, **arrays))
    assert not (tmp_path / "p.npz").exists()


def test_user_file_missing_or_not_npz(tmp_path):
    config = user_config(tmp_path)
    with pytest.raises(DataError, match="not found"):
        datasets.prepare(config)
    (tmp_path / "user.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"not a NumPy \.npz archive") as caught:
        datasets.prepare(config)
    assert "pickle" not in str(caught.value)  # never point users at the unsafe way


# -- warnings: what the data can mislead about -----------------------------------------------


def _waves(n: int = 60, steps: int = 20, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = np.sin(np.linspace(0, 6, steps)[None, :, None] * (1 + y[:, None, None])) + 0.1 * rng.standard_normal(
        (n, steps, 2)
    )
    return X, y


def test_zero_padding_at_the_end_without_lengths_is_named_with_its_fix(tmp_path):
    X, y = _waves()
    lengths = np.random.default_rng(1).integers(8, 21, size=len(X))
    padded = X.copy()
    padded[np.arange(20)[None, :] >= lengths[:, None]] = 0.0
    (warning,) = datasets.build(user_config(tmp_path, X=padded, y=y)).warnings
    zero_steps = int((20 - lengths)[20 - lengths >= 2].sum())
    assert f"{int((20 - lengths >= 2).sum())} of 60 sequences end in 2 or more all-zero steps" in warning
    assert f"({zero_steps / (60 * 20):.0%} of all steps)" in warning
    assert "give `lengths` in the file or pad with NaN" in warning
    # The same sequences with `lengths` (or NaN padding) warn of nothing.
    assert datasets.build(user_config(tmp_path, X=padded, y=y, lengths=lengths)).warnings == []
    nan_padded = padded.copy()
    nan_padded[np.arange(20)[None, :] >= lengths[:, None]] = np.nan
    assert datasets.build(user_config(tmp_path, X=nan_padded, y=y)).warnings == []


def test_copies_across_splits_and_a_missing_class_are_named(tmp_path):
    X, y = _waves()
    copies = [i for i in range(40) if y[i] != 2][:3]  # three training sequences, copied into validation
    fresh = [i for i in range(50, 60) if y[i] != 2][:7]  # and seven others: no class 2 at all
    val = copies + fresh
    config = user_config(
        tmp_path, X_train=X[:40], y_train=y[:40], X_val=X[val], y_val=y[val], X_test=X[40:50], y_test=y[40:50]
    )
    warnings = datasets.build(config).warnings
    assert warnings == [
        f"3 of {len(val)} val sequences are exact copies of training sequences: val accuracy then measures "
        "memory; remove the duplicates before splitting",
        "class 2 has no sequence in the val split: its accuracy says nothing about it; more data of that class, "
        "or other data.val_fraction and data.test_fraction, fix it",
    ]
    assert datasets.build(config).summary()["warnings"] == warnings


def _fit(train: float, balanced: float = 0.8, **fit) -> tuple[dict, dict]:
    metrics = {"train_accuracy": train, **{f"{s}_balanced_accuracy": balanced for s in ("train", "val", "test")}}
    return metrics, {"best_epoch": 10, "stopped_early": False, **fit}


def test_a_model_at_the_majority_rate_or_answering_one_class_is_named():
    from reprolab.metrics import fit_findings

    # 70 of 100 training sequences are class 0: 0.71 training accuracy is no fit.
    ((kind, warning),) = fit_findings(*_fit(0.71), [70, 20, 10], {"test": [0, 1, 2]})
    assert kind == "did not fit"
    assert warning.startswith("training accuracy 0.710 is at the majority-class rate 0.700: the model did not fit")
    assert fit_findings(*_fit(0.80), [70, 20, 10], {"test": [0, 1, 2]}) == []
    ((kind, warning),) = fit_findings(*_fit(0.95), [50, 50], {"val": [1, 1, 1], "test": [0, 1]})
    assert warning == "every val prediction is class 1: the model answers one class whatever the input"


def test_a_nearly_one_class_fit_and_an_early_stop_at_the_first_epochs_are_flagged():
    """ItalyPowerDemand's case: training accuracy far above the majority rate, yet test recalls of
    0.998 and 0.105 (balanced accuracy 0.55 against a chance of 0.5) went unflagged."""
    from reprolab.metrics import fit_findings

    metrics, fit = _fit(0.90)
    metrics.update(test_balanced_accuracy=0.5515, test_recall_class0=0.998, test_recall_class1=0.105)
    ((kind, warning),) = fit_findings(metrics, fit, [50, 50], {"test": [0, 1]})
    assert kind == "near chance"
    assert warning.startswith("test balanced accuracy 0.551 is near chance (0.500 for 2 classes; recalls class 0 0.998")
    # Just above 0.6 (a fifth of the way from chance to 1 for two classes) is not near chance.
    metrics["test_balanced_accuracy"] = 0.61
    assert fit_findings(metrics, fit, [50, 50], {"test": [0, 1]}) == []
    # Ten classes: chance 0.1, so 0.25 is near it.
    metrics["test_balanced_accuracy"] = 0.25
    assert [k for k, _ in fit_findings(metrics, fit, [10] * 10, {})] == ["near chance"]
    metrics["test_balanced_accuracy"] = 0.8
    for best, flagged in ((1, True), (2, True), (3, False)):
        early = fit_findings(metrics, {"best_epoch": best, "stopped_early": True}, [50, 50], {})
        assert [k for k, _ in early] == (["early stop"] if flagged else []), best
    # Stopped at epoch 2 because max_epochs is 2: not an early stop.
    assert fit_findings(metrics, {"best_epoch": 2, "stopped_early": False}, [50, 50], {}) == []


def test_balanced_accuracy_macro_f1_and_recall_per_class_are_the_hand_counts():
    from reprolab.metrics import class_metrics

    # 8 of class 0 and 2 of class 1, all answered 0: accuracy 0.8, yet one class is never found.
    counted = class_metrics([0] * 8 + [1] * 2, [0] * 10, 2)
    assert counted == pytest.approx(
        {
            "balanced_accuracy": 0.5,
            "macro_f1": (2 * 0.8 * 1.0 / 1.8 + 0) / 2,
            "recall_class0": 1.0,
            "recall_class1": 0.0,
        }
    )
    # Recalls 2/3, 1/2, 1/1; precisions 2/2, 1/2, 1/2; F1 0.8, 0.5, 2/3.
    counted = class_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    assert counted["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert counted["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert [counted[f"recall_class{k}"] for k in range(3)] == pytest.approx([2 / 3, 1 / 2, 1])


def test_every_problem_of_a_file_is_named_in_one_message(tmp_path):
    X, y = _waves(steps=12)
    transposed, one_based = X[:, :, :1].transpose(0, 2, 1), y + 1  # [N, channels, T] and labels 1..3
    with pytest.raises(DataError) as caught:
        datasets.build(user_config(tmp_path, X=transposed, y=one_based))
    message = str(caught.value)
    assert "\n" not in message
    assert "Set data.layout=nft to read it that way" in message and "subtract 1 (y - 1)" in message, message
    # With the layout given, only the labels are left to fix.
    with pytest.raises(DataError, match=r"labels are 1..3: they must run 0..K-1") as caught:
        datasets.build(user_config(tmp_path, "data.layout=nft", X=transposed, y=one_based))
    assert "layout" not in str(caught.value)


def test_standardization_uses_the_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    X_train = 10 + 2 * rng.standard_normal((30, 5, 2))
    X_train[:5, 3:] = np.nan  # padding steps do not count
    X_val, X_test = 50 + rng.standard_normal((10, 5, 2)), -3 + rng.standard_normal((10, 5, 2))
    y_train, y_val, y_test = np.arange(30) % 2, np.arange(10) % 2, np.arange(10) % 2
    files = dict(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, X_test=X_test, y_test=y_test)
    scaled = datasets.build(user_config(tmp_path, "data.normalize=standard", **files))
    raw = datasets.build(user_config(tmp_path, "data.normalize=none", **files))
    flat = X_train.reshape(-1, 2)
    mean, sd = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
    train = scaled.splits["train"].X.reshape(-1, 2)
    assert np.nanmean(train, axis=0) == pytest.approx([0, 0], abs=1e-5)
    assert np.nanstd(train, axis=0) == pytest.approx([1, 1], abs=1e-5)
    assert np.isnan(scaled.splits["train"].X[:5, 3:]).all()
    # Validation and test are moved by the training statistics: their own do not leak in.
    for split, X in (("val", X_val), ("test", X_test)):
        np.testing.assert_allclose(scaled.splits[split].X, (X - mean) / sd, atol=1e-5)
    assert scaled.splits["val"].X.mean() > 15  # far from 0: validation was not standardized on itself
    np.testing.assert_allclose(raw.splits["val"].X, X_val, rtol=1e-6)
    assert scaled.digest != raw.digest and scaled.source != raw.source  # recorded in the digest and fingerprint
    # A user file is standardized unless told otherwise.
    assert load_config(["data=npz", "data.user_file=x.npz"], CONF_DIR).data.normalize.value == "standard"


def test_a_fold_splits_the_pooled_training_and_validation_sequences_and_keeps_the_test_split(small_data_config):
    """data.fold: over 3 folds, the validation splits partition the 64 + 128 pooled sequences,
    each stratified; each fold trains on the rest; the test split is the whole dataset's; the pin
    is checked on the whole dataset (a fold has a digest of its own); the prepared file of the
    whole dataset never stands in for a fold."""
    from reprolab.config import FoldConfig, validate
    from reprolab.config.compose import to_dict

    whole = datasets.build(small_data_config)
    pool = np.concatenate([whole.splits["train"].X, whole.splits["val"].X])
    seen, digests = [], set()
    for index in range(3):
        fold = datasets.build(dataclasses.replace(small_data_config, fold=FoldConfig(3, 1, index)))
        assert np.array_equal(fold.splits["test"].X, whole.splits["test"].X)
        assert len(fold.splits["val"].y) == 64 and len(fold.splits["train"].y) == 128
        assert abs(fold.splits["val"].y.mean() - whole.splits["train"].y.mean()) < 0.05  # stratified
        both = np.concatenate([fold.splits["train"].X, fold.splits["val"].X])
        assert sorted(map(bytes, both)) == sorted(map(bytes, pool))
        seen += [bytes(x) for x in fold.splits["val"].X]
        digests.add(fold.digest)
    assert sorted(seen) == sorted(map(bytes, pool)) and len(digests) == 3 and whole.digest not in digests
    pinned = dataclasses.replace(small_data_config, expected_digest="0" * 64, fold=FoldConfig(3, 1, 0))
    with pytest.raises(DataError, match=r"data\.expected_digest pins 000000000000"):
        datasets.build(pinned)
    datasets.prepare(small_data_config)
    folded = dataclasses.replace(small_data_config, fold=FoldConfig(3, 1, 1))
    assert datasets.dataset_for(folded).digest == datasets.build(folded).digest != whole.digest
    config = load_config(["data=synthetic_small"], CONF_DIR)
    params = to_dict(config)
    params["data"]["fold"] = {"folds": 3, "repeats": 2, "index": 6}
    with pytest.raises(ValueError, match=r"data\.fold\.index: must be below folds x repeats \(6\), got 6"):
        validate(params)


def test_folds_that_a_class_cannot_fill_are_refused_in_one_line():
    from reprolab.data.folds import fold_indices

    y = np.array([0] * 20 + [1] * 3)
    with pytest.raises(DataError) as refused:
        fold_indices(y, 5, 1, 0)
    assert str(refused.value) == (
        "audit.folds=5: class 1 has 3 sequences in the training and validation splits together, fewer than the "
        "folds, so a fold could not hold one of each class; set audit.folds to at most 3"
    )
