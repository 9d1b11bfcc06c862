"""A reproduction recorded as its own run, linked to the original, which is tagged with the
verdict; a summary run for reproducing a sweep; and a retrained result kept on this machine
when the store was lost before it could be recorded, recorded by the next try without training.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from mlflow.entities import Metric, Param, RunTag

from reprolab.files import atomic_write
from reprolab.results import RunResult, text_digest
from reprolab.tracking.artifacts import ENVIRONMENT_FILE, RESULT_FILE
from reprolab.tracking.failures import during_run
from reprolab.tracking.runs import open_run, provenance_tags
from reprolab.tracking.store import Store, repo_root

REPRODUCTION_FILE = "reproduction.json"  # the numbers that decide a reproduction's verdict

# The code that trained a run, as its tags name it; a reproduction trains with that code.
TRAINING_CODE_TAGS = (
    "reprolab.source.digest",
    "mlflow.source.git.commit",
    "reprolab.source.commit",
    "reprolab.git_dirty",
)
REPRODUCED_WITH = "reprolab.reproduced_with."  # the code of the command that reproduced, apart


def code_tags(original) -> dict[str, str]:
    """The code that trained (the original's, which the reproduction ran again) under the usual
    names, and the code of the command that reproduced it under `reprolab.reproduced_with.*`."""
    trained = {k: v for k, v in original.data.tags.items() if k in TRAINING_CODE_TAGS}
    command = {
        REPRODUCED_WITH + k.removeprefix("reprolab.").removeprefix("mlflow."): v for k, v in provenance_tags().items()
    }
    return {**trained, **command}


@during_run
def record_reproduction(
    store: Store, original, result: RunResult, outcome: dict, environment: dict, parent_run_id: Optional[str]
) -> str:
    """Record a reproduction as its own run linked to the original (`reprolab.reproduces`), and
    tag the original with the outcome and the date, which the UI shows beside it."""
    tags = {
        "reprolab.kind": "reproduce",
        "reprolab.reproduces": original.info.run_id,
        "reprolab.reproduce.verdict": outcome["verdict"],
        "mlflow.note.content": outcome["summary"],
        **{
            k: v
            for k, v in original.data.tags.items()
            if k in ("reprolab.preset", "reprolab.seed", "reprolab.dataset_digest")
        },
        **code_tags(original),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with open_run(store, f"reproduce {original.info.run_name}", tags) as run_id:
        now = int(time.time() * 1000)
        store.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in result.metrics.items()],
            params=[Param(k, v) for k, v in original.data.params.items()],
        )
        store.client.log_text(run_id, result.to_json(), RESULT_FILE)
        store.client.log_dict(run_id, environment, ENVIRONMENT_FILE)
        store.client.log_dict(run_id, outcome, REPRODUCTION_FILE)
    _tag_reproduced(store, original.info.run_id, outcome["verdict"], run_id)
    return run_id


def _tag_reproduced(store: Store, run_id: str, verdict: str, by: str) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    store.client.log_batch(
        run_id,
        tags=[
            RunTag("reprolab.reproduced", verdict),
            RunTag("reprolab.reproduced_at", when),
            RunTag("reprolab.reproduced_by", by),
        ],
    )


@contextmanager
def reproduction_summary(store: Store, original) -> Iterator[tuple[str, Callable[[str, str, dict[str, Any]], None]]]:
    """A summary run for reproducing a sweep, its runs' reproductions nested under it; call the
    yielded `finish(verdict, note, numbers)` once they are done (the numbers that decided the
    note go in its reproduction.json)."""
    tags = {"reprolab.kind": "reproduce-summary", "reprolab.reproduces": original.info.run_id, **code_tags(original)}
    ended: dict[str, Any] = {}
    with open_run(store, f"reproduce {original.info.run_name}", tags) as run_id:
        yield run_id, lambda verdict, note, numbers: ended.update(verdict=verdict, note=note, numbers=numbers)
        during_run(store.client.log_batch)(
            run_id,
            tags=[RunTag("reprolab.reproduce.verdict", ended["verdict"]), RunTag("mlflow.note.content", ended["note"])],
        )
        decided = {"verdict": ended["verdict"], "summary": ended["note"], **ended["numbers"]}
        during_run(store.client.log_dict)(run_id, decided, REPRODUCTION_FILE)
    during_run(_tag_reproduced)(store, original.info.run_id, ended["verdict"], run_id)


KEPT_SCHEMA = 1  # of a kept result: a newer one is not read


def kept_path(run_id: str) -> Path:
    """Where a retrained result waits for a store that was lost: `.reprolab/kept/<run id>.json`."""
    return repo_root() / ".reprolab" / "kept" / f"{run_id}.json"


def _inputs_digest(rebuilt: Any) -> str:
    """What the retraining ran on: the archive, the configuration, the data file, preset, seed."""
    digest = hashlib.sha256(rebuilt.archive)
    digest.update(json.dumps(rebuilt.params, sort_keys=True).encode())
    if rebuilt.data_file is not None:
        digest.update(rebuilt.data_file[0].encode() + b"\0" + rebuilt.data_file[1])
    digest.update(f"{rebuilt.preset}\0{rebuilt.seed}".encode())
    return digest.hexdigest()


def keep_result(rebuilt: Any, again: dict) -> Path:
    """Keep what the retraining of `rebuilt` gave, with the digest of what it ran on."""
    path = kept_path(rebuilt.run.info.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": KEPT_SCHEMA,
        "run_id": rebuilt.run.info.run_id,
        "inputs_sha256": _inputs_digest(rebuilt),
        "result_sha256": text_digest(json.dumps(again, sort_keys=True)),
        "kept_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "result": again,
    }
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record)))
    return path


def kept_result(rebuilt: Any) -> tuple[Optional[dict], str]:
    """A kept result for `rebuilt` and when it was kept, or (None, why not): one that does not
    match what this rebuild would train (another archive, configuration or data), or that is not
    whole, is never used (`drop_kept` removes it once a result is recorded)."""
    path = kept_path(rebuilt.run.info.run_id)
    if not path.is_file():
        return None, ""
    try:
        record = json.loads(path.read_text())
        body = json.dumps(record["result"], sort_keys=True)
        whole = record["schema"] <= KEPT_SCHEMA and text_digest(body) == record["result_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        whole = False
    if not whole:
        return None, f"the result kept in {path} is not whole: training again"
    if record["inputs_sha256"] != _inputs_digest(rebuilt):
        return None, f"the result kept in {path} was trained on another record of the run: training again"
    return record["result"], record["kept_at"]


def drop_kept(run_id: str) -> None:
    kept_path(run_id).unlink(missing_ok=True)
