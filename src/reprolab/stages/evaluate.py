"""Stage `evaluate@<preset>`: judge a trained preset against the dataset's target.

Reads what training measured (`train.json`) and writes the headline metrics file DVC shows
(`dvc metrics show`): accuracies, the train-validation gap, the balanced accuracies when the
target bounds them, and whether the target is met. Neither torch nor MLflow is needed: changing
the target re-runs this stage in about a second, and retrains nothing.
"""

from __future__ import annotations

import argparse
import json

from reprolab import entrypoint
from reprolab.config import load_params
from reprolab.files import Outputs, read_json
from reprolab.metrics import HEADLINE, target_keys, target_met, with_gap
from reprolab.stages import FIT_SHAPE, PARAMS_FILE, fit_file, metrics_file


def evaluate(fit: dict, target) -> dict:
    """The headline metrics of a fit, with the target's verdict (left out when no target is set)."""
    metrics = with_gap(fit["metrics"])
    shown = list(dict.fromkeys((*HEADLINE, *target_keys(target))))
    met = target_met(metrics, target)
    return {**{key: round(metrics[key], 6) for key in shown}, **({} if met is None else {"target_met": met})}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m reprolab.stages.evaluate", description=__doc__)
    parser.add_argument("preset")
    preset = parser.parse_args().preset
    config = load_params(PARAMS_FILE)
    config.preset(preset)
    fit = read_json(fit_file(preset), f"rerun its training: `dvc repro --force train@{preset}`", FIT_SHAPE)
    metrics = evaluate(fit, config.data.target)
    with Outputs() as outputs:
        outputs.json(metrics_file(preset), metrics)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
