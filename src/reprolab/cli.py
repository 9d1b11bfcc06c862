"""The `reprolab` command: a thin layer over the package's functions.

Every command takes Hydra override strings after its options, e.g.
`reprolab train experiment=baseline seed=3 experiments.baseline.train.lr=0.005`.
Bad input (any `UserError`) ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from reprolab import data as datasets
from reprolab.config import ConfigError, UserError, compose_raw, load_config, validate


def _seeds(text: str) -> list[int]:
    """'0-4' or '0,2,5' -> a list of ints."""
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-", 1))
            return list(range(first, last + 1))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-4 or 0,1,2; got {text!r}") from None


def cmd_compose(args: argparse.Namespace) -> int:
    raw = compose_raw(args.overrides, args.config_dir)
    validate(raw)
    text = OmegaConf.to_yaml(raw)  # the same bytes `dvc exp run` writes
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    config = load_config(args.overrides, args.config_dir)
    dataset = datasets.prepare(config.data)
    print(json.dumps(dataset.summary(), indent=2))
    return 0


def _ensure_dataset(config) -> datasets.Dataset:
    """The verified prepared dataset, building it first if it is not there yet."""
    if not Path(config.data.prepared_path).exists():
        return datasets.prepare(config.data)
    return datasets.load(config.data)


def cmd_train(args: argparse.Namespace) -> int:
    from reprolab.runs import run_one

    config = load_config(args.overrides, args.config_dir)
    _, result = run_one(config, config.experiment, config.seed, data=_ensure_dataset(config),
                        progress=not args.no_progress)
    print(json.dumps({"preset": result.preset, "seed": result.seed, **result.metrics, **result.fit,
                      "dataset_digest": result.dataset_digest}, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reprolab.report import comparison_table, per_seed_table
    from reprolab.runs import run_many

    config = load_config(args.overrides, args.config_dir)
    presets = args.presets.split(",") if args.presets else list(config.experiments)
    for name in presets:
        config.preset(name)
    dataset = _ensure_dataset(config)
    print(f"dataset {dataset.name} digest {dataset.digest[:12]}, Bayes-optimal accuracy "
          + ", ".join(f"{s} {split.bayes_accuracy:.3f}" for s, split in dataset.splits.items()
                      if split.bayes_accuracy is not None), flush=True)
    results = run_many(config, presets, args.seeds, workers=args.workers)
    print(comparison_table(results, config.target))
    print()
    print(per_seed_table(results))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from reprolab import pipeline

    if args.stage in ("train", "evaluate") and not args.preset:
        raise ConfigError(f"stage: `reprolab stage {args.stage}` needs a preset name")
    if args.stage == "check_params":
        print(pipeline.stage_check_params())
    elif args.stage == "prepare":
        print(json.dumps(pipeline.stage_prepare().summary(), indent=2))
    elif args.stage == "train":
        print(json.dumps(pipeline.stage_train(args.preset), indent=2))
    elif args.stage == "evaluate":
        print(json.dumps(pipeline.stage_evaluate(args.preset), indent=2))
    else:
        print(pipeline.stage_report(args.preset.split(",") if args.preset else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reprolab", description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", default=None, help="Hydra config directory (default: ./conf)")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=baseline seed=3")
        sub.set_defaults(handler=handler)
        return sub

    compose_cmd = command("compose", cmd_compose, "Compose conf/ into a resolved params file.")
    compose_cmd.add_argument("-o", "--output", default="params.yaml", help="file to write, or - for stdout")
    command("prepare", cmd_prepare, "Build the dataset, verify its pinned digest, write it.")
    train_cmd = command("train", cmd_train, "Train and evaluate one preset (`experiment=`) with one seed.")
    train_cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    compare_cmd = command("compare", cmd_compare,
                          "Train every preset for several seeds and print the before/after table.")
    compare_cmd.add_argument("--seeds", type=_seeds, default=list(range(5)), help="e.g. 0-4 or 0,3")
    compare_cmd.add_argument("--presets", default=None, help="comma-separated (default: all)")
    compare_cmd.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    compare_cmd.add_argument("--output", default=None, help="also write the runs as JSON here")
    stage_cmd = commands.add_parser("stage", help="Run one DVC stage on params.yaml (dvc.yaml calls these).")
    stage_cmd.add_argument("stage", choices=["check_params", "prepare", "train", "evaluate", "report"])
    stage_cmd.add_argument("preset", nargs="?", default=None,
                           help="the preset (train, evaluate) or comma-separated presets (report)")
    stage_cmd.set_defaults(handler=cmd_stage)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: parse, dispatch, turn known errors into one line and exit status 2."""
    args = build_parser().parse_args(argv)
    # DVC and process managers stop a stage with SIGTERM: treat it like Ctrl-C so the MLflow
    # run is marked KILLED and temporary files are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"reprolab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reprolab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
