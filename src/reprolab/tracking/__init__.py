"""MLflow tracking: the one package that talks to MLflow; everything else passes plain values.

One MLflow experiment per project; one run per training invocation, named `<preset>-seed<seed>`,
whatever starts it (a pipeline stage, `reprolab train`, a sweep's child run). The default store
is MLflow's SQLite database at the repository root; `MLFLOW_TRACKING_URI` or `tracking.uri`
point elsewhere (a shared server, see docs/tracking.md).

In: plain values (a Config, a RunResult, files). Out: runs, their artifacts and tags, read back
and checked. What MLflow lacks and this package adds, each in its own module:
- `store`: a store that fails in seconds with one line (`failures`: retries off, errors wrapped);
- `runs`: runs that end KILLED on Ctrl-C and FAILED on errors; summary runs over sweeps;
- `owners`: the owner (host, process) of each open run, so a run whose process died (SIGKILL,
  power loss) is marked KILLED by the next command that reaches the store;
- `training_run`: a training run's whole record; `artifacts`: what a run holds under which name;
- `cache`: a run key per training run, so a sweep reuses a checked finished run instead of
  training again;
- `registry`: registered models whose digests are checked; `links`: UI paths, run references;
- `recorded`: the code a run recorded, read back from the store.

Cost: per-epoch metrics are sent in batches every FLUSH_SECONDS, and the model is saved with the
`pickle` serialization format and explicit pip requirements. MLflow's defaults (`pt2`, which
runs `torch.export`, and pip requirement inference in a subprocess) took 11-13 s per model here;
these settings take about 1 s.

Importing any module of this package first sets MLflow's environment, below, before MLflow is
imported.
"""

import os

# Fail in seconds, not minutes, when a tracking server is unreachable: MLflow's defaults
# (7 retries with exponential backoff, 120 s timeout) took 246 s to give up here.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow 3 would otherwise contact its telemetry service; these machines reach no outside host.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's INFO lines ("Creating initial MLflow database tables...") would bury a command's own.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# A progress bar per downloaded result.json (a sweep's reuse) would bury the sweep's own lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
