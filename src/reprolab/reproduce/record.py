"""A reproduction recorded as its own run, linked to the original, which is tagged with the
verdict; a summary run for reproducing a sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

from mlflow.entities import Metric, Param, RunTag

from reprolab.results import RunResult
from reprolab.tracking.artifacts import ENVIRONMENT_FILE, RESULT_FILE
from reprolab.tracking.failures import during_run
from reprolab.tracking.runs import open_run, provenance_tags
from reprolab.tracking.store import Store

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
        store.client.log_dict(run_id, outcome, "reproduction.json")
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
def reproduction_summary(store: Store, original) -> Iterator[tuple[str, Callable[[str, str], None]]]:
    """A summary run for reproducing a sweep, its runs' reproductions nested under it; call the
    yielded `finish(verdict, note)` once they are done."""
    tags = {"reprolab.kind": "reproduce-summary", "reprolab.reproduces": original.info.run_id, **code_tags(original)}
    ended: dict[str, str] = {}
    with open_run(store, f"reproduce {original.info.run_name}", tags) as run_id:
        yield run_id, lambda verdict, note: ended.update(verdict=verdict, note=note)
        during_run(store.client.log_batch)(
            run_id,
            tags=[RunTag("reprolab.reproduce.verdict", ended["verdict"]), RunTag("mlflow.note.content", ended["note"])],
        )
    during_run(_tag_reproduced)(store, original.info.run_id, ended["verdict"], run_id)
