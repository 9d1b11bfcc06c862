"""Who holds a run open (host, process and its start time), so that a run whose process died
(SIGKILL, power loss) is marked KILLED by the next command that reaches the store.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Optional

from mlflow.tracking import MlflowClient


def _process_started(pid: int) -> Optional[float]:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def owner_tags() -> dict[str, str]:
    """Who holds a run open: this host and process (with its start time, against pid reuse)."""
    pid = os.getpid()
    return {
        "reprolab.owner.host": socket.gethostname(),
        "reprolab.owner.pid": str(pid),
        "reprolab.owner.started": f"{_process_started(pid) or 0:.2f}",
    }


def close_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose owning process is gone; return their ids.

    MLflow has no notion of a run's owner: a run whose process was killed outright stays
    RUNNING for ever. Runs owned by other hosts are left alone (their processes cannot be seen
    from here)."""
    host = socket.gethostname()
    closed = []
    for run in client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`reprolab.owner.host` = '{host}'",
        max_results=1000,
    ):
        tags = run.data.tags
        pid, started = int(tags.get("reprolab.owner.pid", "0")), float(tags.get("reprolab.owner.started", "0"))
        alive = _process_started(pid)
        if alive is not None and abs(alive - started) < 1.0:
            continue
        client.set_tag(run.info.run_id, "reprolab.end_reason", f"its process {pid} on {host} ended without closing it")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
        print(
            f"reprolab: marked MLflow run {run.info.run_id} ({run.info.run_name}) KILLED: its process {pid} is gone",
            file=sys.stderr,
        )
    return closed
