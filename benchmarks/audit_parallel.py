"""Audit wall time: serial, local processes, a Dask cluster. Prints figures measured in this one
run; asserts only that the results agree.

Runs the whole audit (training, MLflow recording of every run, report) three times, each
against a fresh SQLite store in a temporary directory and with reuse off (every run trains):
with one worker, with --workers local processes (default: one per core), and on a Dask
cluster of --workers worker processes with one thread each (dask.distributed's LocalCluster on
127.0.0.1). Prints the wall times, the speed-ups over serial, and whether the audits agree.

    python benchmarks/audit_parallel.py [--seeds 0-4] [--workers N] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path

from reprolab import data as datasets
from reprolab.audit.run import AuditSide, run_audit
from reprolab.cli import seed_list
from reprolab.config import load_config


def timed_audit(overrides: list[str], seeds: list[int], workers: int, tmp: Path, scheduler=None):
    os.environ["DVC_ROOT"] = str(tmp)  # the default store goes to <tmp>/mlflow.db
    config = load_config(["tracking=sqlite", f"data.prepared_path={tmp}/data.npz", *overrides])
    data = datasets.prepare(config.data)
    before, after = (AuditSide(p, config, data, "conf/") for p in (config.audit.before, config.audit.after))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run progress lines
        summary, _ = run_audit(
            config, before, after, seeds, tmp / "audit", workers=workers, scheduler=scheduler, reuse=False
        )
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2, 3, 4], help="e.g. 0-1 (default 0-4)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    timings = {}
    for name, workers in (("serial", 1), ("local", args.workers)):
        with tempfile.TemporaryDirectory() as tmp:
            timings[name] = timed_audit(args.overrides, args.seeds, workers, Path(tmp))
    from distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        ) as cluster,
        tempfile.TemporaryDirectory() as tmp,
    ):
        timings["dask"] = timed_audit(args.overrides, args.seeds, args.workers, Path(tmp), cluster.scheduler_address)
    serial, serial_summary = timings["serial"]
    runs = len(serial_summary.variants) * len(args.seeds)
    print(f"audit of {runs} runs (seeds {args.seeds}), {os.cpu_count()} cores, every run trained")
    print(f"  serial (1 worker):               {serial:7.1f} s")
    for name, label in (("local", "local processes"), ("dask", "Dask workers")):
        wall = timings[name][0]
        print(f"  {label} ({args.workers}):{' ' * (15 - len(label))}{wall:7.1f} s   speed-up {serial / wall:.2f}x")
    same = all(
        summary.variants == serial_summary.variants and summary.verdict == serial_summary.verdict
        for _, summary in timings.values()
    )
    print(f"  identical results: {same}")
    if not same:
        raise SystemExit("the audits disagree")


if __name__ == "__main__":
    main()
