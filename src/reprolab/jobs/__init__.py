"""Training jobs run in worker processes; their results come back to this process, the driver,
which is the only one that records them in MLflow.

In: `Job`s (a preset of a configuration, a seed, a dataset, and this code or a run's recorded
code). Out: each job's `RunResult` (and, for this code, its trained model), as each finishes.
- `job`: one job and how it trains; `recorded`: training with a run's recorded code;
- `background`: one job beside the driver, epochs streamed back (a stage, `reprolab train`);
- `run`: many jobs, over `local` processes or a Dask `cluster`; `worker`: what a worker runs;
- `sweep`: many runs under one MLflow summary run, reusing checked finished runs.

Each run is single-threaded and seeded, so a result does not depend on where it ran.
"""
