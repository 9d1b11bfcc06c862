"""What one change of the "after" preset costs, the audit included. Prints figures measured in this
one run; asserts nothing.

In a fresh copy of the repository: a cold `dvc repro` (every stage and the audit), then the
regularized learning rate changed in conf/ (0.001 -> 0.002), `reprolab compose`, and a timed
`dvc repro`. Prints both times, the stages that ran, how many of the audit's runs were reused
rather than retrained (docs/cluster.md, "Each run computed once"), and the retrained runs' own
training time (`wall_time_s`), the audit's and the report's divided by their workers: the floor
that the second `dvc repro` is measured against.

    python benchmarks/repro_after_change.py
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from common import clean_env, copy_repository, timed


def main() -> None:
    env = clean_env()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        cold, _, _ = timed(["dvc", "repro"], repo, env)
        preset = repo / "conf/preset/regularized.yaml"
        preset.write_text(preset.read_text().replace("  lr: 0.001", "  lr: 0.002"))
        timed(["reprolab", "compose"], repo, env)
        wall, _, out = timed(["dvc", "repro"], repo, env)
        ran = re.findall(r"Running stage '([^']+)'", out)
        audit = json.loads((repo / "reports/audit/summary.json").read_text())
        stages = sum(
            json.loads((repo / f"results/{stage.split('@')[1]}/train.json").read_text())["wall_time_s"]
            for stage in ran
            if stage.startswith("train@")
        )
        client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("reprolab").experiment_id
        retrained = client.search_runs(
            [experiment], f"tags.`reprolab.audit_id` = '{audit['audit_id']}' and tags.`reprolab.kind` = 'audit'"
        )
        audit_training = sum(run.data.metrics["wall_time_s"] for run in retrained)
        # The report's runs over audit.seeds that the run cache did not hold, nested under its run.
        report = client.search_runs([experiment], "tags.`reprolab.kind` = 'report'", order_by=["start_time DESC"])[0]
        report_runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{report.info.run_id}'")
        report_training = sum(run.data.metrics["wall_time_s"] for run in report_runs)
    runs = len(audit["configurations"]) * len(audit["seeds"])
    workers = os.cpu_count() or 1
    floor = stages + (audit_training + report_training) / workers
    print(f"cold `dvc repro` (every stage, audit of {runs} runs):      {cold:6.1f} s")
    print(f"`dvc repro` after experiments.regularized.train.lr 0.001 -> 0.002: {wall:6.1f} s")
    print(f"  stages run: {', '.join(ran)}")
    print(f"  audit runs reused: {audit['runs_reused']} of {runs}; retrained: {runs - audit['runs_reused']}")
    print(f"  report runs retrained: {len(report_runs)}")
    print(
        f"  the retrained runs' own training: stages {stages:.1f} s + (audit {audit_training:.1f} s + report "
        f"{report_training:.1f} s) / {workers} workers = {floor:.1f} s; `dvc repro` took {wall / floor:.2f}x that "
        f"(goal <= 1.3x)"
    )


if __name__ == "__main__":
    main()
