"""Reproduce a recorded run from its MLflow run id, and say whether the result is the same.

In: a reference to a run (`reprolab.tracking.links.resolve_run`). Its record is read back and
what made it is rebuilt in a scratch folder (`rebuild`): its code, configuration and data; the
environment is this one, compared with the run's `environment.json`. The run is trained again
by its own code, in a separate Python process whose `reprolab` is the recorded one
(`reprolab.jobs.recorded`). Out: a verdict per run (`judge`: `identical`, `within tolerance`,
`within noise`, or `differs` with the cause and the first epoch and metric where the two part),
recorded as a run linked to the original, with the original tagged (`record`). A summary run
reproduces every run it rests on (`run`).
"""
