"""What the portable numerics cost: the training time of the same runs in the portable mode and in
the native mode (this CPU's fastest kernels), measured in this one run of the script. Prints
figures; asserts nothing.

Each of the pipeline's presets on the built-in dataset, seed 0, is trained by `reprolab train`
(no tracking) once in each mode, in fresh processes one after the other (a process's kernels are
set before torch starts), and the training loop's own time (`wall_time_s`) is compared. The
weights' digests say whether the two modes computed the same bits on this CPU.

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


def train(preset: str, mode: str, folder: Path) -> dict:
    args = ["reprolab", "--config-dir", str(REPO / "conf"), "train", "--no-progress", f"experiment={preset}"]
    args += ["tracking=none", f"compute.numerics={mode}"]
    _, _, out = timed([*args, f"data.prepared_path={folder / 'data.npz'}"], folder, clean_env())
    return json.loads(out[out.index("{") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=PRESETS)
    presets = parser.parse_args().presets.split(",")
    print(f"CPU: {cpu_model()} ({platform.machine()})")
    totals = {"portable": 0.0, "native": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            runs = {mode: train(preset, mode, Path(tmp)) for mode in ("native", "portable")}
            for mode, run in runs.items():
                totals[mode] += run["wall_time_s"]
            same = runs["native"]["weights_sha256"] == runs["portable"]["weights_sha256"]
            native, portable = runs["native"]["wall_time_s"], runs["portable"]["wall_time_s"]
            print(
                f"{preset:12s} native {native:6.1f} s, portable {portable:6.1f} s: portable / native "
                f"{portable / native:.2f}x ({'the same' if same else 'other'} weights)"
            )
    print(
        f"{'all':12s} native {totals['native']:6.1f} s, portable {totals['portable']:6.1f} s: "
        f"portable / native {totals['portable'] / totals['native']:.2f}x"
    )


if __name__ == "__main__":
    main()
