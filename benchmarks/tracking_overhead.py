"""How much does MLflow tracking add to one training run? Prints figures; asserts nothing.

The same preset is trained untracked and tracked in one process (so imports are paid once and
excluded), against a fresh SQLite store in a temporary directory. Each phase of tracking is
timed on its own; the median of --repeat rounds and the first (cold) round are printed.

    python benchmarks/tracking_overhead.py [--repeat 3] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time

from reprolab import data as datasets
from reprolab.config import load_config
from reprolab.tracking.store import connect
from reprolab.tracking.training_run import training_run
from reprolab.training import run_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ["DVC_ROOT"] = tmp  # the default store goes to <tmp>/mlflow.db
        config = load_config(["tracking=sqlite", f"data.prepared_path={tmp}/data.npz", *args.overrides])
        data = datasets.prepare(config.data)
        run = config.run_config()
        preset, seed = run.preset, run.seed

        started = time.perf_counter()
        connect(config.tracking)
        store_creation = time.perf_counter() - started

        phases: dict[str, list[float]] = {
            k: []
            for k in (
                "untracked training",
                "tracked training",
                "open run (params, config, dataset)",
                "log history, model, metrics",
                "close run",
                "tracking overhead",
            )
        }
        for _ in range(args.repeat):
            started = time.perf_counter()
            trained, result = run_one(config, preset, seed, data, progress=False)
            phases["untracked training"].append(time.perf_counter() - started)

            marks = [time.perf_counter()]
            context = training_run(config, run, data)
            tracked = context.__enter__()
            marks.append(time.perf_counter())
            trained, result = run_one(config, preset, seed, data, progress=False, on_epoch=tracked.log_epoch)
            marks.append(time.perf_counter())
            tracked.log_result(trained, result, data)
            marks.append(time.perf_counter())
            context.__exit__(None, None, None)
            marks.append(time.perf_counter())
            steps = [b - a for a, b in itertools.pairwise(marks)]
            phases["open run (params, config, dataset)"].append(steps[0])
            phases["tracked training"].append(steps[1])
            phases["log history, model, metrics"].append(steps[2])
            phases["close run"].append(steps[3])
            phases["tracking overhead"].append(steps[0] + steps[2] + steps[3])

    print(f"preset {run.preset}, {trained.epochs_run} epochs, {args.repeat} rounds: median, first round")
    print(f"  {'store creation (once per store)':38s} {store_creation:7.3f} s")
    for name, values in phases.items():
        print(f"  {name:38s} {statistics.median(values):7.3f} s {values[0]:7.3f} s")
    overhead = statistics.median(phases["tracking overhead"])
    untracked = statistics.median(phases["untracked training"])
    print(
        f"  tracked run / untracked run: {(untracked + overhead) / untracked:.2f}x "
        f"(overhead {overhead:.2f} s on {untracked:.2f} s of training)"
    )


if __name__ == "__main__":
    main()
