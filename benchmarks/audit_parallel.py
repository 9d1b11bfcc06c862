"""Audit wall time, serial vs parallel. Prints figures; asserts only that the results agree.

Runs the whole audit (training, MLflow recording of every run, report) once with one worker
and once with --workers (default: one per core), each against a fresh SQLite store in a
temporary directory, and prints both wall times, the speed-up and whether the two audits gave
identical results.

    python benchmarks/audit_parallel.py [--seeds 0-1] [--workers N] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

from reprolab import data as datasets
from reprolab.audit_run import AuditSide, run_audit
from reprolab.cli import seed_list
from reprolab.config import load_config


def timed_audit(overrides: list[str], seeds: list[int], workers: int, tmp: Path):
    os.environ["DVC_ROOT"] = str(tmp)  # the default store goes to <tmp>/mlflow.db
    config = load_config(["tracking=sqlite", f"data.prepared_path={tmp}/data.npz", *overrides])
    data = datasets.prepare(config.data)
    before, after = (AuditSide(p, config, data, "conf/") for p in (config.audit.before, config.audit.after))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run progress lines
        summary, _ = run_audit(config, before, after, seeds, tmp / "audit", workers=workers)
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default=[0, 1], help="e.g. 0-4 (default 0-1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    timings = {}
    for workers in (1, args.workers):
        with tempfile.TemporaryDirectory() as tmp:
            timings[workers] = timed_audit(args.overrides, args.seeds, workers, Path(tmp))
    (serial, serial_summary), (parallel, parallel_summary) = timings[1], timings[args.workers]
    runs = len(serial_summary.variants) * len(args.seeds)
    print(f"audit of {runs} runs (seeds {args.seeds}), {os.cpu_count()} cores")
    print(f"  serial (1 worker):    {serial:7.1f} s")
    print(f"  parallel ({args.workers} workers): {parallel:7.1f} s")
    print(f"  speed-up: {serial / parallel:.2f}x")
    same = serial_summary.variants == parallel_summary.variants and serial_summary.verdict == parallel_summary.verdict
    print(f"  identical results: {same}")
    if not same:
        raise SystemExit("the serial and parallel audits disagree")


if __name__ == "__main__":
    main()
