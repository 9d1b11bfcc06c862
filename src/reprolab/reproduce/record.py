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
        **provenance_tags(),
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
    tags = {"reprolab.kind": "reproduce-summary", "reprolab.reproduces": original.info.run_id, **provenance_tags()}
    ended: dict[str, str] = {}
    with open_run(store, f"reproduce {original.info.run_name}", tags) as run_id:
        yield run_id, lambda verdict, note: ended.update(verdict=verdict, note=note)
        during_run(store.client.log_batch)(
            run_id,
            tags=[RunTag("reprolab.reproduce.verdict", ended["verdict"]), RunTag("mlflow.note.content", ended["note"])],
        )
    during_run(_tag_reproduced)(store, original.info.run_id, ended["verdict"], run_id)
