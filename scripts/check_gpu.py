"""Check training on a GPU machine in a minute or two.

Trains the regularized preset on the fixed dataset twice on the GPU and once on the CPU, and
prints whether the two GPU runs repeat bit for bit (they must: same GPU, driver and libraries),
how far their accuracies are from the CPU run's (they may differ a little: other kernels), and
the time per epoch on each device. Exit status 1 when the GPU runs differ, 2 without a GPU.

    python scripts/check_gpu.py [--epochs 60] [--device cuda] [hydra overrides...]

`--device cpu` runs the same check on the CPU alone (what the project's tests do).
"""

from __future__ import annotations

import argparse
import sys

from reprolab import data as datasets
from reprolab.config import load_config
from reprolab.training import run_one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("check_gpu: no GPU here (torch.cuda.is_available() is False); nothing to check", file=sys.stderr)
        return 2

    def config_on(device: str):
        return load_config(
            [
                "experiment=regularized",
                f"experiments.regularized.train.max_epochs={args.epochs}",
                f"experiments.regularized.train.device={device}",
                *args.overrides,
            ]
        )

    config = config_on(args.device)
    data = datasets.dataset_for(config.data)
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    first = run_one(config, "regularized", 0, data, progress=False)
    second = run_one(config, "regularized", 0, data, progress=False)
    cpu = run_one(config_on("cpu"), "regularized", 0, data, progress=False)
    same = first[1].history == second[1].history and first[1].metrics == second[1].metrics
    print(f"{args.device} runs repeat exactly: {same}")
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        value, reference = first[1].metrics[key], cpu[1].metrics[key]
        print(f"  {key}: {args.device} {value:.4f}, cpu {reference:.4f}, difference {value - reference:+.4f}")
    for name, (trained, _) in ((args.device, first), ("cpu", cpu)):
        per_epoch = trained.wall_time_s / trained.epochs_run * 1000
        print(f"  {name}: {per_epoch:.1f} ms per epoch ({trained.epochs_run} epochs)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
