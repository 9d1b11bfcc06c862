"""What the portable numerics cost: the training time of the same runs in the portable mode and in
the native mode (this CPU's fastest kernels), measured in this one run of the script. Prints
figures; asserts nothing.

Each of the pipeline's presets on the built-in dataset, seed 0, is trained by `reprolab train`
(no tracking) once in each mode, in fresh processes one after the other (a process's kernels are
set before torch starts), and the training loop's own time (`wall_time_s`) is compared. The
weights' digests say whether the two modes computed the same bits on this CPU. A third run, the
native mode held to AVX2 (torch, MKL and oneDNN), splits the cost: what the portable mode's
AVX2-level kernels cost on a CPU with wider ones, and what its own step-by-step layers cost.

    python benchmarks/numerics.py [--presets baseline,regularized,lstm,gru]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from common import REPO, clean_env, timed
from reprolab.numerics import cpu_model

PRESETS = "baseline,regularized,lstm,gru"


AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MODES = {"native": ("native", {}), "native at AVX2": ("native", AVX2), "portable": ("portable", {})}


def train(preset: str, mode: str, folder: Path) -> dict:
    numerics, env = MODES[mode]
    args = ["reprolab", "--config-dir", str(REPO / "conf"), "train", "--no-progress", f"experiment={preset}"]
    args += ["tracking=none", f"compute.numerics={numerics}"]
    _, _, out = timed([*args, f"data.prepared_path={folder / 'data.npz'}"], folder, {**clean_env(), **env})
    return json.loads(out[out.index("{") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=PRESETS)
    presets = parser.parse_args().presets.split(",")
    print(f"CPU: {cpu_model()} ({platform.machine()})")
    totals = dict.fromkeys(MODES, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            runs = {mode: train(preset, mode, Path(tmp)) for mode in MODES}
            for mode, run in runs.items():
                totals[mode] += run["wall_time_s"]
            same = runs["native"]["weights_sha256"] == runs["portable"]["weights_sha256"]
            print(f"{preset:12s} {_ratios({mode: run['wall_time_s'] for mode, run in runs.items()})}", end="")
            print(f" ({'the same' if same else 'other'} weights natively)")
    print(f"{'all':12s} {_ratios(totals)}")


def _ratios(seconds: dict[str, float]) -> str:
    times = ", ".join(f"{mode} {value:6.1f} s" for mode, value in seconds.items())
    portable = seconds["portable"]
    return (
        f"{times}: portable / native {portable / seconds['native']:.2f}x, portable / native at AVX2 "
        f"{portable / seconds['native at AVX2']:.2f}x"
    )


if __name__ == "__main__":
    main()
