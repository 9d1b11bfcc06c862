"""What the pipeline costs over bare training. Prints figures measured in this one run; asserts nothing.

In a fresh copy of the repository (no prepared data, no MLflow store), times:
1. untracked single-process training of the pipeline's runs (every preset with its seed and the
   report's `audit.seeds`): one Python process that imports, loads the dataset and trains them
   one after another, tracking off;
2. a cold, tracked `dvc repro evaluate report`: every stage of the pipeline but the audit;
3. the process (CPU) time of the `check_params` and `prepare` stages, each run on its own;
4. the import of torch and of MLflow alone, the fixed cost each training stage pays once.

    python benchmarks/pipeline_overhead.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import clean_env, copy_repository, timed

UNTRACKED = """
import time
started = time.perf_counter()
from reprolab import data as datasets
from reprolab.config import load_params
from reprolab.training import run_one
config = load_params("params.yaml")
data = datasets.build(config.data)
ready = time.perf_counter()
seeds = sorted({config.seed, *config.audit.seeds})
for preset in config.experiments:
    for seed in seeds:
        run_one(config, preset, seed, data, progress=False)
print(ready - started, time.perf_counter() - ready, len(seeds))
"""


def main() -> None:
    env = clean_env()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        wall_untracked, _, out = timed([sys.executable, "-c", UNTRACKED], repo, env)
        setup, training, seeds = (float(value) for value in out.split())
        wall_repro, _, _ = timed(["dvc", "repro", "evaluate", "report"], repo, env)
        stage_cpu = {
            stage: timed([sys.executable, "-m", f"reprolab.stages.{stage}"], repo, env)[1]
            for stage in ("check_params", "prepare")
        }
        imports = {name: timed([sys.executable, "-c", f"import {name}"], repo, env)[0] for name in ("torch", "mlflow")}
    presets = "baseline, regularized, lstm, gru"
    print(
        f"untracked, one process ({presets}, {seeds:.0f} seeds each): {wall_untracked:6.1f} s "
        f"(imports and data {setup:.1f} s, training {training:.1f} s)"
    )
    print(f"cold tracked `dvc repro evaluate report` (no audit):   {wall_repro:6.1f} s")
    print(
        f"  ratio: {wall_repro / wall_untracked:.2f}x the untracked process, "
        f"{wall_repro / training:.2f}x its training alone (goal: <= 1.3x the untracked process)"
    )
    for stage, cpu in stage_cpu.items():
        print(f"  process time of {stage}: {cpu:.2f} s (goal < 1 s)")
    print(
        f"  each training stage imports torch ({imports['torch']:.1f} s) and MLflow ({imports['mlflow']:.1f} s) "
        f"once: {4 * sum(imports.values()):.1f} s for the 4 presets"
    )


if __name__ == "__main__":
    main()
