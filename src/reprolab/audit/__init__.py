"""The audit: which change closed the gap between two configurations or recorded runs.

In: two sides (presets of this code, or recorded runs with their own code, config and data),
seeds and a confidence level. Out: `reports/audit/` (audit.md, summary.json, runs.csv, figures)
and an MLflow summary run with every training run nested under it or listed as reused.
- `design`: the changes between the sides and the configurations to train (coalitions);
- `measure`: each configuration's metrics over seeds, with bootstrap intervals;
- `checks`: a configuration against the target; `attribution`: each change's Shapley share;
- `verdict`: the conclusion and its sentences; `report`, `summary`, `figures`: its outputs;
- `run`: training and recording it all; `history`: audits over the git history.

The analysis modules are pure functions on configs and `RunResult`s; only `run` trains and
records.
"""
