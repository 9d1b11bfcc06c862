"""The `reprolab` command: a thin layer over the package's functions.

Every command takes Hydra override strings after its options, e.g.
`reprolab train experiment=baseline seed=3 experiments.baseline.train.lr=0.005`.
Bad input (any `UserError`) ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from reprolab import data as datasets
from reprolab.config import Config, ConfigError, UserError, compose_raw, load_config, load_params, validate


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


def _audit_side(config: Config, data: datasets.Dataset, preset: str, params_file: Optional[str],
                scratch: Path, label: str):
    """One side of an audit: a preset of the composed config, or of another resolved params file
    (e.g. `git show v1:params.yaml > old.yaml`), whose dataset is then built and verified."""
    from reprolab.pipeline import AuditSide

    if params_file is None:
        config.preset(preset)
        return AuditSide(preset, config, data, "conf/")
    side = load_params(params_file)
    side.preset(preset)
    if side.data == config.data:
        return AuditSide(preset, side, data, params_file)
    side_data_config = dataclasses.replace(side.data, prepared_path=str(scratch / f"{label}.npz"))
    side = dataclasses.replace(side, data=side_data_config)
    return AuditSide(preset, side, datasets.prepare(side_data_config), params_file)


def cmd_audit(args: argparse.Namespace) -> int:
    config = load_config(args.overrides, args.config_dir)
    if args.history:
        from reprolab.history import history_markdown, walk
        from reprolab.pipeline import run_dir

        preset = args.preset or config.audit.after
        metrics_file = str(run_dir(preset) / "metrics.json")
        markdown = history_markdown(walk(Path.cwd(), preset, config.target, metrics_file, args.rev), metrics_file)
        _emit(markdown, args.output)
        return 0
    from reprolab.pipeline import run_audit

    data = _ensure_dataset(config)
    seeds = args.seeds or config.audit.seeds
    with tempfile.TemporaryDirectory(prefix="reprolab-audit-") as scratch:
        before = _audit_side(config, data, args.before or config.audit.before, args.before_params,
                             Path(scratch), "before")
        after = _audit_side(config, data, args.after or config.audit.after, args.after_params,
                            Path(scratch), "after")
        output = Path(args.output_dir) if args.output_dir else None
        summary, markdown = run_audit(config, before, after, seeds, output or Path("reports/audits/latest"),
                                      workers=args.workers or config.audit.workers,
                                      allow_dataset_mismatch=args.allow_dataset_mismatch,
                                      log_models=config.audit.log_models and not args.no_models)
    print(markdown)
    return 0


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    print(text)


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
    elif args.stage == "audit":
        print(pipeline.stage_audit())
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
    audit_cmd = command("audit", cmd_audit,
                        "Which change closed the gap: an ablation over seeds with intervals (or --history).")
    audit_cmd.add_argument("--before", default=None, help="preset before the change (default: audit.before)")
    audit_cmd.add_argument("--after", default=None, help="preset after the change (default: audit.after)")
    audit_cmd.add_argument("--before-params", default=None, metavar="FILE",
                           help="take the before preset and its data from this resolved params file")
    audit_cmd.add_argument("--after-params", default=None, metavar="FILE",
                           help="take the after preset and its data from this resolved params file")
    audit_cmd.add_argument("--seeds", type=_seeds, default=None, help="e.g. 0-4 (default: audit.seeds)")
    audit_cmd.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    audit_cmd.add_argument("--allow-dataset-mismatch", action="store_true",
                           help="compare even if the two sides' dataset digests differ")
    audit_cmd.add_argument("--no-models", action="store_true", help="do not log the runs' models to MLflow")
    audit_cmd.add_argument("--output-dir", default=None,
                           help="where the report goes (default: reports/audits/latest; the DVC stage "
                                "writes reports/audit)")
    audit_cmd.add_argument("--history", action="store_true",
                           help="walk the git history instead: parameter changes, metrics, first commit "
                                "where the target held")
    audit_cmd.add_argument("--preset", default=None, help="--history: the preset whose metrics count "
                                                          "(default: audit.after)")
    audit_cmd.add_argument("--rev", default="HEAD", help="--history: walk the first parents of this revision")
    audit_cmd.add_argument("--output", default=None, help="--history: also write the Markdown here")
    stage_cmd = commands.add_parser("stage", help="Run one DVC stage on params.yaml (dvc.yaml calls these).")
    stage_cmd.add_argument("stage", choices=["check_params", "prepare", "train", "evaluate", "report", "audit"])
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
