"""The `reprolab` command: a thin layer over the package's functions.

Every command takes Hydra override strings after its options, e.g.
`reprolab train experiment=baseline seed=3 experiments.baseline.train.lr=0.005`.
Every training it does is recorded in MLflow (`tracking=none` turns that off). Bad input ends
with one line on stderr and exit status 2 (see `reprolab.entrypoint`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, Optional

from reprolab import entrypoint

# Only light imports at the top: `main` installs the signal handlers before anything heavy is
# imported (see reprolab.entrypoint), so each command imports what it uses itself.


MAX_SEEDS = 1000  # bounds the work (and the memory for planning it) that one command accepts


def seed_list(text: str) -> list[int]:
    """'0-4' or '0,2,5' -> a list of distinct seeds in the seed range."""
    from reprolab.config import SEED_MAX

    try:
        if "-" in text.strip("-"):
            first, last = (int(part) for part in text.split("-", 1))
            if last < first:
                raise argparse.ArgumentTypeError(f"seed range {text!r} runs backwards; write {last}-{first}")
            if last - first + 1 > MAX_SEEDS:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is {last - first + 1} seeds; a command takes at most {MAX_SEEDS} (one training each)"
                )
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-4 or 0,1,2; got {text!r}") from None
    if len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{len(seeds)} seeds; a command takes at most {MAX_SEEDS}")
    if not seeds or min(seeds) < 0 or max(seeds) > SEED_MAX or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct numbers in 0..{SEED_MAX}; got {text!r}")
    return seeds


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, e.g. 1e-4; got {text!r}")
    return value


def training_config(args: argparse.Namespace):
    """The configuration of a command that trains, with this process's kernels set from its
    compute.numerics before torch is imported (`reprolab.numerics`)."""
    from reprolab import numerics
    from reprolab.config import load_config

    config = load_config(args.overrides, args.config_dir)
    numerics.apply(config.compute.numerics.value)
    return config


def cmd_compose(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from reprolab.config import compose_raw, validate

    raw = compose_raw(args.overrides, args.config_dir)
    validate(raw)
    text = OmegaConf.to_yaml(raw)  # the same bytes `dvc exp run` writes
    if args.output == "-":
        sys.stdout.write(text)
    else:
        from reprolab.files import atomic_write

        atomic_write(Path(args.output), lambda tmp: tmp.write_text(text))
        print(f"wrote {args.output}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from reprolab import data as datasets
    from reprolab.config import load_config

    config = load_config(args.overrides, args.config_dir)
    dataset = datasets.prepare(config.data)
    print(json.dumps(dataset.summary(), indent=2))
    entrypoint.warn(dataset.warnings)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from reprolab import data as datasets
    from reprolab.jobs import Job, train_in_background

    config = training_config(args)
    data = datasets.dataset_for(config.data)
    entrypoint.warn(data.warnings)
    run = config.run_config()
    with train_in_background(Job(config, run.preset, run.seed, data), progress=not args.no_progress) as worker:
        from reprolab import tracking

        with tracking.training_run(config, run, data, started_s_ago=worker.elapsed()) as tracked:
            trained, result = worker.result(on_epoch=tracked.log_epoch)
            tracked.log_result(trained, result, data)
    print(
        json.dumps(
            {
                "preset": result.preset,
                "seed": result.seed,
                **result.metrics,
                **result.fit,
                "dataset_digest": result.dataset_digest,
                "weights_sha256": result.weights_sha256,
                "numerics": (trained.kernels or {}).get("mode"),
                "mlflow_run_id": tracked.run_id,
            },
            indent=2,
        )
    )
    entrypoint.warn(result.warnings(data.splits["train"].y))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reprolab import data as datasets
    from reprolab import tracking
    from reprolab.audit import seed_checks
    from reprolab.jobs import Job, scheduler_address
    from reprolab.metrics import meets_target
    from reprolab.report import comparison_table, per_seed_table, seeds_note
    from reprolab.sweep import run_sweep

    config = training_config(args)
    presets = args.presets.split(",") if args.presets else list(config.experiments)
    for name in presets:
        config.preset(name)
    data = datasets.dataset_for(config.data)
    bayes = {s: split.bayes_accuracy for s, split in data.splits.items() if split.bayes_accuracy is not None}
    print(
        f"dataset {data.name} digest {data.digest[:12]}"
        + (", Bayes-optimal accuracy " + ", ".join(f"{s} {v:.3f}" for s, v in bayes.items()) if bayes else ""),
        flush=True,
    )
    jobs = [Job(config, preset, seed, data) for preset in presets for seed in args.seeds]
    tags = {"reprolab.dataset_digest": data.digest, "reprolab.compare.presets": ",".join(presets)}
    with tracking.summary_run(config, f"compare {', '.join(presets)}", "compare-summary", tags) as parent:

        def describe(job: Job, result) -> tuple[str, dict[str, str]]:
            met = meets_target(result.metrics, config.data.target)
            return f"{job.preset}-seed{job.seed}", {"reprolab.target_met": str(met).lower()}

        runs = run_sweep(
            jobs,
            kind="compare",
            parent_run_id=parent,
            describe=describe,
            log_models=config.tracking.log_sweep_models,
            workers=args.workers or config.compute.workers,
            scheduler=scheduler_address(config.compute, args.scheduler),
            reuse=config.compute.reuse and not args.retrain,
        )
        results = [run.result for run in runs]
        checks = seed_checks(results, data.labels(), config.data.target, config.audit.confidence)
        table = comparison_table(results, checks, config.data.target)
        table += "\n\n" + seeds_note(config.audit.confidence, len(args.seeds))
        seeds_table = per_seed_table(results, config.data.target)
        reused = sum(run.reused for run in runs)
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "comparison.md"
            report.write_text(f"{table}\n\n{seeds_table}\n")
            tracking.finish_summary(
                config,
                parent,
                [report],
                "compare",
                f"{len(runs) - reused} runs trained and nested under this run, {reused} reused; "
                f"seeds {','.join(map(str, args.seeds))}",
                tags={
                    "reprolab.runs_reused": str(reused),
                    **{f"reprolab.run.{r.result.preset}-seed{r.result.seed}": r.run_id or "-" for r in runs},
                },
                rests_on=[r.run_id for r in runs],
            )
    print(table)
    print()
    print(seeds_table)
    if reused:
        print(f"\n{reused} of {len(runs)} runs reused from finished runs with the same run key (--retrain retrains)")
    if args.output:
        from reprolab.files import atomic_write

        atomic_write(
            Path(args.output),
            lambda tmp: tmp.write_text(json.dumps([json.loads(r.to_json()) for r in results], indent=1)),
        )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:

    config = training_config(args)
    if args.history:
        from reprolab.history import history_markdown, walk
        from reprolab.stages import metrics_file

        preset = args.preset or config.audit.after
        markdown = history_markdown(
            walk(Path.cwd(), preset, config.data.target, str(metrics_file(preset)), args.rev), str(metrics_file(preset))
        )
        _emit(markdown, args.output)
        return 0
    from reprolab import data as datasets
    from reprolab.audit_run import run_audit, side_from, side_from_run
    from reprolab.jobs import scheduler_address
    from reprolab.tracking import names_a_run

    data = datasets.dataset_for(config.data)
    seeds = args.seeds or config.audit.seeds

    def side(value: Optional[str], default: str, params: Optional[str], label: str, scratch: Path):
        name = value or default
        if params is None and name not in config.experiments and names_a_run(name):
            return side_from_run(config, data, name, scratch, label)
        return side_from(config, data, name, params, scratch, label)

    with tempfile.TemporaryDirectory(prefix="reprolab-audit-") as scratch:
        before = side(args.before, config.audit.before, args.before_params, "before", Path(scratch))
        after = side(args.after, config.audit.after, args.after_params, "after", Path(scratch))
        output = Path(args.output_dir) if args.output_dir else Path("reports/audits/latest")
        _, markdown = run_audit(
            config,
            before,
            after,
            seeds,
            output,
            workers=args.workers or config.compute.workers,
            allow_dataset_mismatch=args.allow_dataset_mismatch,
            log_models=config.tracking.log_sweep_models and not args.no_models,
            scheduler=scheduler_address(config.compute, args.scheduler),
            reuse=config.compute.reuse and not args.retrain,
        )
    print(markdown)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from reprolab.jobs import scheduler_address
    from reprolab.reproduce import IDENTICAL, reproduce, verdict_of

    config = training_config(args)
    outcomes, note = reproduce(
        config,
        args.run,
        tolerance=args.tolerance,
        workers=args.workers or config.compute.workers,
        scheduler=scheduler_address(config.compute, args.scheduler),
    )
    for outcome in outcomes:
        print(outcome.summary())
        for name in outcome.altered_code:
            print(f"  captured code altered since the run: {name}")
        for difference in outcome.differences[1:6]:
            print(f"  also: {difference}")
        if len(outcome.differences) > 6:
            print(f"  ... {len(outcome.differences) - 6} more differences (reproduction.json of the new run)")
        if outcome.environment:
            print("  environment differences: " + "; ".join(outcome.environment[:10]))
        print(f"  recorded as MLflow run {outcome.reproduction_id}")
    if note:
        print(note)
    if args.exact:
        return 0 if verdict_of(outcomes) == IDENTICAL else 1
    return 0 if all(outcome.stands for outcome in outcomes) else 1


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from reprolab import tracking
    from reprolab.config import load_config

    config = load_config(args.overrides, args.config_dir)
    for what, link in tracking.ui_links(config).items():
        print(f"{what}: {link}")
    uri = tracking.tracking_uri(config.tracking)
    if args.links_only or not uri.startswith("sqlite:"):
        return 0
    port = tracking.UI_ADDRESS.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", port]
    return subprocess.run(command, check=False).returncode


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        from reprolab.files import atomic_write

        atomic_write(Path(output), lambda tmp: tmp.write_text(text))
        print(f"wrote {output}", file=sys.stderr)
    print(text)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block); `--help` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _sweep_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the trainings on this Dask scheduler (tcp://host:8786); else DASK_SCHEDULER_ADDRESS, "
        "compute.scheduler, or local processes",
    )
    command.add_argument(
        "--retrain", action="store_true", help="train every run, even where a finished run with the same key exists"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reprolab", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config-dir", default=None, help="Hydra config directory (default: ./conf)")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, first: Optional[tuple[str, str]] = None
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if first is not None:  # a positional argument before the overrides
            sub.add_argument(first[0], help=first[1])
        sub.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=baseline seed=3")
        sub.set_defaults(handler=handler)
        return sub

    compose_cmd = command("compose", cmd_compose, "Compose conf/ into a resolved params file.")
    compose_cmd.add_argument("-o", "--output", default="params.yaml", help="file to write, or - for stdout")
    command("prepare", cmd_prepare, "Build the dataset, check its pinned digest, write data.prepared_path.")
    train_cmd = command("train", cmd_train, "Train and evaluate one preset (`experiment=`) with one seed.")
    train_cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    compare_cmd = command(
        "compare", cmd_compare, "Train every preset for several seeds and print the before/after table."
    )
    compare_cmd.add_argument("--seeds", type=seed_list, default=list(range(5)), help="e.g. 0-4 or 0,3")
    compare_cmd.add_argument("--presets", default=None, help="comma-separated (default: all)")
    compare_cmd.add_argument("--workers", type=positive, default=None, help="processes (default: one per core)")
    compare_cmd.add_argument("--output", default=None, help="also write the runs as JSON here")
    for sweep_cmd in (compare_cmd,):
        _sweep_options(sweep_cmd)
    reproduce_cmd = command(
        "reproduce",
        cmd_reproduce,
        "Rebuild a recorded run (code, config, data) from its MLflow run, train it again, say whether it matched.",
        ("run", "a run id, runs:/<id>, a run's URL from the MLflow UI, or models:/<name>@<alias>"),
    )
    reproduce_cmd.add_argument(
        "--tolerance",
        type=tolerance,
        default=0.0,
        help="largest difference in any metric still called a match (another device or library); 0: bit for bit",
    )
    reproduce_cmd.add_argument(
        "--workers", type=positive, default=None, help="runs at once for a sweep (default: cores)"
    )
    reproduce_cmd.add_argument(
        "--exact",
        action="store_true",
        help="exit 1 unless every run is identical bit for bit (without it: 0 when every result stands)",
    )
    reproduce_cmd.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a sweep's runs on this Dask scheduler; else DASK_SCHEDULER_ADDRESS, compute.scheduler, or local",
    )
    ui_cmd = command(
        "ui", cmd_ui, "Print the MLflow UI's links for this project; serve a SQLite store on 127.0.0.1:5000."
    )
    ui_cmd.add_argument("--links-only", action="store_true", help="print the links, start nothing")
    audit_cmd = command(
        "audit", cmd_audit, "Which change closed the gap: an ablation over seeds with intervals (or --history)."
    )
    run_forms = (
        "a preset, or a recorded training run (trained by its own code): its id, runs:/<id>, its MLflow UI URL or "
        "models:/<name>@<alias>"
    )
    audit_cmd.add_argument("--before", default=None, help=f"before the change: {run_forms} (default: audit.before)")
    audit_cmd.add_argument("--after", default=None, help=f"after the change: {run_forms} (default: audit.after)")
    audit_cmd.add_argument(
        "--before-params",
        default=None,
        metavar="FILE",
        help="take the before preset and its data from this resolved params file",
    )
    audit_cmd.add_argument(
        "--after-params",
        default=None,
        metavar="FILE",
        help="take the after preset and its data from this resolved params file",
    )
    audit_cmd.add_argument("--seeds", type=seed_list, default=None, help="e.g. 0-4 (default: audit.seeds)")
    audit_cmd.add_argument("--workers", type=positive, default=None, help="processes (default: one per core)")
    audit_cmd.add_argument(
        "--allow-dataset-mismatch", action="store_true", help="compare even if the two sides' dataset digests differ"
    )
    audit_cmd.add_argument("--no-models", action="store_true", help="do not log the runs' models to MLflow")
    _sweep_options(audit_cmd)
    audit_cmd.add_argument(
        "--output-dir",
        default=None,
        help="where the report goes (default: reports/audits/latest; the DVC stage writes reports/audit)",
    )
    audit_cmd.add_argument(
        "--history",
        action="store_true",
        help="walk the git history instead: parameter changes, metrics, first commit where the target held",
    )
    audit_cmd.add_argument(
        "--preset", default=None, help="--history: the preset whose metrics count (default: audit.after)"
    )
    audit_cmd.add_argument("--rev", default="HEAD", help="--history: walk the first parents of this revision")
    audit_cmd.add_argument("--output", default=None, help="--history: also write the Markdown here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script: parse, then run under `reprolab.entrypoint`'s rules."""
    entrypoint.install_signal_handlers()
    parser = build_parser()
    # Overrides may also follow options (`reproduce RUN --tolerance 1e-4 data=mine`), which
    # argparse leaves over once it has filled the positionals.
    args, left = parser.parse_known_args(argv)
    options = [text for text in left if text.startswith("-")]
    if options:
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    args.overrides = [*args.overrides, *left]
    return entrypoint.call(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
