"""What the pipeline costs over bare training. Prints figures measured in this one run; asserts nothing.

In a fresh copy of the repository (no prepared data, no MLflow store), times:
1. untracked single-process training of the pipeline's runs (every preset, seed 0): one Python
   process that imports, loads the dataset and trains them one after another, tracking off;
2. a cold, tracked `dvc repro evaluate report`: every stage of the pipeline but the audit;
3. the process (CPU) time of the `check_params` and `prepare` stages, each run on its own;
4. the import of torch and of MLflow alone, the fixed cost each training stage pays once.

    python benchmarks/pipeline_overhead.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UNTRACKED = """
import time
started = time.perf_counter()
from reprolab import data as datasets
from reprolab.config import load_params
from reprolab.training import run_one
config = load_params("params.yaml")
data = datasets.build(config.data)
ready = time.perf_counter()
for preset in config.experiments:
    run_one(config, preset, config.seed, data, progress=False)
print(ready - started, time.perf_counter() - ready)
"""


def copy_repository(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes((REPO / name).read_bytes())
    subprocess.run(["git", "init", "-q"], cwd=target, check=True, timeout=60)


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the process and its children), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        wall_untracked, _, out = timed([sys.executable, "-c", UNTRACKED], repo, env)
        setup, training = (float(value) for value in out.split())
        wall_repro, _, _ = timed(["dvc", "repro", "evaluate", "report"], repo, env)
        stage_cpu = {
            stage: timed([sys.executable, "-m", f"reprolab.stages.{stage}"], repo, env)[1]
            for stage in ("check_params", "prepare")
        }
        imports = {name: timed([sys.executable, "-c", f"import {name}"], repo, env)[0] for name in ("torch", "mlflow")}
    presets = "baseline, regularized, lstm, gru"
    print(
        f"untracked, one process ({presets}, seed 0): {wall_untracked:6.1f} s "
        f"(imports and data {setup:.1f} s, training {training:.1f} s)"
    )
    print(f"cold tracked `dvc repro evaluate report` (no audit):   {wall_repro:6.1f} s")
    print(
        f"  ratio: {wall_repro / wall_untracked:.2f}x the untracked process, "
        f"{wall_repro / training:.2f}x its training alone (goal <= 1.6x)"
    )
    for stage, cpu in stage_cpu.items():
        print(f"  process time of {stage}: {cpu:.2f} s (goal < 1 s)")
    print(
        f"  each training stage imports torch ({imports['torch']:.1f} s) and MLflow ({imports['mlflow']:.1f} s) "
        f"once: {4 * sum(imports.values()):.1f} s for the 4 presets"
    )


if __name__ == "__main__":
    main()
