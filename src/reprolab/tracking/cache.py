"""Reuse of finished runs: the run key that says what makes a result, the finished run with a
key whose `result.json` checks out against what it logged, and the runs of one
configuration over other seeds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from mlflow.exceptions import MlflowException

from reprolab import numerics
from reprolab.config import Config, RunConfig, to_dict
from reprolab.data import Dataset
from reprolab.entrypoint import one_line
from reprolab.record.code import RecordedCode
from reprolab.record.signing import SignatureError
from reprolab.record.signing import check as check_signature
from reprolab.results import HISTORY_KEYS, RunResult, disagreement, text_digest
from reprolab.tracking.artifacts import CONFIG_KEY_TAG, RESULT_DIGEST_TAG, RESULT_FILE
from reprolab.tracking.failures import during_run
from reprolab.tracking.store import Store, connect


@functools.lru_cache(maxsize=1)
def _training_code() -> dict[str, str]:
    from reprolab.sources import training_code

    return training_code()


def run_key(run: RunConfig, dataset_digest: str, code: Optional[RecordedCode] = None, seed: bool = True) -> str:
    """What makes a training run's result: its model and training settings, its seed, the digest
    of its dataset, and the code and libraries that train (a digest of `reprolab.training` and
    every module it runs, this code's or the recorded `code`'s; the torch and NumPy versions),
    and the kernels that compute it (`numerics.key`). The preset's name does not count. Without
    the `seed`, the key of the configuration: its runs over other seeds share it."""
    payload = {
        "model": to_dict(run.model),
        "train": to_dict(run.train),
        **({"seed": run.seed} if seed else {}),
        "dataset": dataset_digest,
        "numerics": numerics.key(),
        **_training_code(),
        **({"code": code.training_digest} if code else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@during_run
def finished_runs(config: Config, wanted: Mapping[str, Dataset]) -> dict[str, tuple[str, RunResult]]:
    """For each run key (and the dataset its runs trained on), the newest FINISHED run with that
    key whose result checks out (`checked_result`: its record, and its metrics against its own
    predictions and the dataset's labels), and that result."""
    if not config.tracking.enabled:
        return {}
    store = connect(config.tracking)
    found: dict[str, tuple[str, RunResult]] = {}
    with tempfile.TemporaryDirectory(prefix="reprolab-reuse-") as scratch:
        for key, data in wanted.items():
            for candidate in store.client.search_runs(
                [store.experiment_id],
                f"tags.`reprolab.run_key` = '{key}' and attributes.status = 'FINISHED'",
                max_results=5,
                order_by=["attributes.start_time DESC"],
            ):
                try:
                    result = checked_result(store, candidate, Path(scratch) / candidate.info.run_id, data=data)
                except (ValueError, SignatureError) as error:
                    print(f"reprolab: not reusing MLflow run {candidate.info.run_id}: {error}", file=sys.stderr)
                    continue
                found[key] = (candidate.info.run_id, result)
                break
    return found


def checked_result(
    store: Store, run, folder: Path, history: bool = False, untagged: bool = False, data: Optional[Dataset] = None
) -> RunResult:
    """A run's result.json, checked against what was recorded with the run: the digest kept in
    its tags when it was written (`untagged`: a run of an older reprolab without one passes),
    the final metrics and fit it logged, and with `history` every per-epoch value it logged
    (what the UI's charts show), and with `data` its metrics against its own predictions and the
    dataset's labels. With a signing key set, its signature too (SignatureError). ValueError
    names the first thing that disagrees."""
    check_signature(run.data.tags, f"MLflow run {run.info.run_id}")
    try:
        text = Path(store.client.download_artifacts(run.info.run_id, RESULT_FILE, str(folder))).read_text()
        result = RunResult.from_json(text)
    except (MlflowException, OSError, ValueError, TypeError) as error:
        raise ValueError(f"its {RESULT_FILE} cannot be read ({one_line(error)[:120]})") from error
    recorded = run.data.tags.get(RESULT_DIGEST_TAG)
    if recorded is None and not untagged:
        raise ValueError(
            f"it carries no {RESULT_DIGEST_TAG} tag (recorded by an older reprolab), so it cannot be checked"
        )
    if recorded is not None and text_digest(text) != recorded:
        raise ValueError(
            f"its {RESULT_FILE} is not the one recorded with it "
            f"(digest {text_digest(text)[:12]}…, recorded {recorded[:12]}…)"
        )
    logged = run.data.metrics
    final = {**result.metrics, **{k: v for k, v in result.fit.items() if isinstance(v, (int, float))}}
    for key, value in final.items():
        if key not in logged or logged[key] != float(value):
            raise ValueError(
                f"its logged {key} ({logged.get(key, 'missing')}) disagrees with its own {RESULT_FILE} ({value})"
            )
    if history:
        _check_history(store, run.info.run_id, result)
    if data is not None:
        if result.dataset_digest != data.digest:
            raise ValueError(f"it trained on dataset {result.dataset_digest[:12]}…, not {data.digest[:12]}…")
        wrong = disagreement(result, data.labels(), data.num_classes)
        if wrong:
            raise ValueError(wrong)
    return result


def _check_history(store: Store, run_id: str, result: RunResult) -> None:
    """Every per-epoch value the run logged (`epoch/<key>`, step = epoch) is its result's history."""
    for key in HISTORY_KEYS:
        expected = {int(record["epoch"]): float(record[key]) for record in result.history}
        logged: dict[int, list[float]] = {}
        for metric in store.client.get_metric_history(run_id, f"epoch/{key}"):
            logged.setdefault(metric.step, []).append(metric.value)
        for epoch in sorted(set(expected) | set(logged)):
            values = logged.get(epoch, [])
            if values != [expected.get(epoch)]:
                shown = ", ".join(f"{v:g}" for v in values) or "missing"
                raise ValueError(
                    f"its logged epoch/{key} at epoch {epoch} ({shown}) disagrees with its own {RESULT_FILE} "
                    f"({expected.get(epoch, 'no such epoch')})"
                )


@during_run
def same_configuration(store: Store, run) -> list:
    """The FINISHED training runs of `run`'s configuration over other seeds (its config key),
    newest first, one a seed: what its seed-to-seed spread is measured on."""
    key = run.data.tags.get(CONFIG_KEY_TAG)
    if not key:
        return []
    found: dict[str, Any] = {}
    for other in store.client.search_runs(
        [run.info.experiment_id],
        f"tags.`{CONFIG_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    ):
        seed = other.data.tags.get("reprolab.seed")
        if seed and seed != run.data.tags.get("reprolab.seed") and other.data.tags.get("reprolab.kind") != "reproduce":
            found.setdefault(seed, other)
    return list(found.values())
