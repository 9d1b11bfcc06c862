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

In: a `DataConfig`. Out: a checked `Dataset` (`build`, `prepare`, `load`, `dataset_for`).
`dataset` holds the dataset and its digest, `synthetic` the task, `user_file` the reading of a
user's file, `prepared` building and reading the prepared file. `reprolab.data.build` is a
contract with the code every run recorded (`reprolab.jobs.recorded`): it stays importable here.
"""

from reprolab.data.dataset import (
    FORMAT,
    METADATA_KEYS,
    SOURCE_KEY,
    SPLITS,
    WARNINGS_KEY,
    ZERO_TAIL_SHARE,
    ZERO_TAIL_STEPS,
    DataError,
    Dataset,
    Split,
    content_digest,
    data_warnings,
    padding_warnings,
)
from reprolab.data.prepared import (
    build,
    check_digest,
    dataset_for,
    load,
    prepare,
    prepare_arrays,
    source_fingerprint,
    standardized,
)
from reprolab.data.synthetic import generate_synthetic
from reprolab.data.user_file import check_arrays, file_sha256, not_a_file, read_npz, read_user_file

__all__ = [
    "FORMAT",
    "METADATA_KEYS",
    "SOURCE_KEY",
    "SPLITS",
    "WARNINGS_KEY",
    "ZERO_TAIL_SHARE",
    "ZERO_TAIL_STEPS",
    "DataError",
    "Dataset",
    "Split",
    "build",
    "check_arrays",
    "check_digest",
    "content_digest",
    "data_warnings",
    "dataset_for",
    "file_sha256",
    "generate_synthetic",
    "load",
    "not_a_file",
    "padding_warnings",
    "prepare",
    "prepare_arrays",
    "read_npz",
    "read_user_file",
    "source_fingerprint",
    "standardized",
]
