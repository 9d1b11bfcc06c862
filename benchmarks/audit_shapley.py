"""How many runs the Shapley design of the audit trains on top of an existing one-at-a-time audit.
Prints figures counted in this one run; asserts nothing.

The earlier design trained before, after, before + each change and after - each change (2k + 2
configurations). In a fresh SQLite store, this script first trains exactly those configurations
(the audit's own jobs, filtered), as an earlier audit would have, then runs the audit, which
needs every combination (2^k) and reuses what the run cache holds. Prints the configurations
and runs on each side and how many the audit trained: it should be only the new configurations
times the seeds.

    python benchmarks/audit_shapley.py [--seeds 0-1] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

from reprolab import data as datasets
from reprolab.audit.design import AFTER, BEFORE, added_label, removed_label
from reprolab.audit.run import AuditSide, ablation_jobs, run_audit
from reprolab.cli import seed_list
from reprolab.config import load_config
from reprolab.jobs.sweep import run_sweep

SMALL = [
    "data=synthetic_small",
    "experiments.baseline.train.max_epochs=5",
    "experiments.regularized.train.max_epochs=5",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default=[0, 1], help="e.g. 0-4 (default 0-1)")
    parser.add_argument("overrides", nargs="*", help=f"hydra overrides (default: {' '.join(SMALL)})")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DVC_ROOT"] = tmp  # the default store goes to <tmp>/mlflow.db
        config = load_config(["tracking=sqlite", f"data.prepared_path={tmp}/data.npz", *(args.overrides or SMALL)])
        data = datasets.prepare(config.data)
        before, after = (AuditSide(p, config, data, "conf/") for p in (config.audit.before, config.audit.after))
        changes, jobs = ablation_jobs(before, after, args.seeds, "earlier", config.tracking)
        earlier = {BEFORE, AFTER} | {
            label for change in changes for label in (added_label(change), removed_label(change))
        }
        with contextlib.redirect_stdout(io.StringIO()):
            run_sweep(
                [job for job in jobs if job.preset in earlier],
                kind="audit",
                parent_run_id=None,
                describe=lambda job, result: (f"{job.preset} seed{job.seed}", {}),
                log_models=False,
            )
            summary, _ = run_audit(config, before, after, args.seeds, Path(tmp) / "audit", log_models=False)
        reused = json.loads((Path(tmp) / "audit/summary.json").read_text())["runs_reused"]
    seeds = len(args.seeds)
    total = len(summary.variants) * seeds
    trained = total - reused
    print(f"{len(changes)} changes, {seeds} seeds")
    print(f"earlier one-at-a-time audit: {len(earlier)} configurations, {len(earlier) * seeds} runs")
    print(f"Shapley design:              {len(summary.variants)} configurations, {total} runs")
    print(
        f"trained on top: {trained} runs = {trained // seeds} new configurations x {seeds} seeds "
        f"(expected {(len(summary.variants) - len(earlier)) * seeds})"
    )


if __name__ == "__main__":
    main()
