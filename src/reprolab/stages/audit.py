"""Stage `audit`: which of the changes from `audit.before` to `audit.after` closed the gap, over
`audit.seeds`, on the pipeline's dataset. Writes `reports/audit/` (see `reprolab.audit.run`).

Runs whose key is unchanged (a finished run with the same settings, seed, dataset and training
code) are reused, so changing the after preset retrains only the configurations that contain
the change. `compute` says where the others run (local processes or a Dask cluster)."""

from __future__ import annotations

from reprolab import entrypoint, numerics
from reprolab.stages import AUDIT_DIR, PARAMS_FILE


def main() -> int:
    from reprolab import data as datasets
    from reprolab.audit.run import AuditSide, run_audit
    from reprolab.config import load_params
    from reprolab.jobs.job import scheduler_address

    config = load_params(PARAMS_FILE)
    numerics.apply(config.compute.numerics.value)  # before torch is imported
    data = datasets.load(config.data)
    before, after = (
        AuditSide(preset, config, data, str(PARAMS_FILE)) for preset in (config.audit.before, config.audit.after)
    )
    _, markdown = run_audit(
        config,
        before,
        after,
        config.audit.seeds,
        AUDIT_DIR,
        workers=config.compute.workers,
        log_models=config.tracking.log_sweep_models,
        scheduler=scheduler_address(config.compute),
        reuse=config.compute.reuse,
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
