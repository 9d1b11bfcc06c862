"""Stage `train@<preset>`: train one preset with `seed`, evaluate it on every split, record the
run in MLflow, and write the model, its per-epoch history, the test predictions and a summary
(metrics, fit, MLflow run id). Outputs are written only when the run is recorded in full."""

from __future__ import annotations

import argparse
import json

from reprolab import entrypoint, numerics
from reprolab.stages import PARAMS_FILE, fit_file, history_file, model_file, predictions_file


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m reprolab.stages.train", description=__doc__)
    parser.add_argument("preset")
    preset = parser.parse_args().preset

    from reprolab import data as datasets
    from reprolab.config import load_params
    from reprolab.files import Outputs, npz_writer
    from reprolab.jobs.background import train_in_background
    from reprolab.jobs.job import Job

    config = load_params(PARAMS_FILE)
    numerics.apply(config.compute.numerics.value)  # before torch is imported
    run = config.run_config(preset)
    data = datasets.load(config.data)
    # Training starts in a worker first: MLflow's import and the run's setup overlap it.
    with train_in_background(Job(config, preset, run.seed, data)) as worker:
        from reprolab.models import save_arrays
        from reprolab.results import HISTORY_KEYS
        from reprolab.tracking.training_run import training_run

        with training_run(config, run, data, started_s_ago=worker.elapsed()) as tracked:
            trained, result = worker.result(on_epoch=tracked.log_epoch)
            tracked.log_result(trained, result, data)
            summary = {
                "preset": preset,
                "seed": run.seed,
                "mlflow_run_id": tracked.run_id,
                "dataset_digest": data.digest,
                "device": trained.device,
                "numerics": numerics.brief(trained.kernels),
                "metrics": result.metrics,
                **result.fit,
            }
            test = data.splits["test"]
            with Outputs() as outputs:
                outputs.add(model_file(preset), npz_writer(save_arrays(trained.model)))
                outputs.csv(history_file(preset), result.history, ["epoch", *HISTORY_KEYS])
                outputs.csv(
                    predictions_file(preset),
                    [{"actual": int(a), "predicted": p} for a, p in zip(test.y, result.predictions["test"])],
                    ["actual", "predicted"],
                )
                outputs.json(fit_file(preset), summary)
    print(json.dumps(summary, indent=2))
    entrypoint.warn(result.warnings(data.splits["train"].y))
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
