"""What each `reprolab` command does, given its parsed arguments (`reprolab.cli` parses them).

Only light imports at the top: `main` installs the signal handlers before anything heavy is
imported (see reprolab.entrypoint), so each command imports what it uses itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

from reprolab import entrypoint


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
    from reprolab.jobs.background import train_in_background
    from reprolab.jobs.job import Job

    config = training_config(args)
    data = datasets.dataset_for(config.data)
    entrypoint.warn(data.warnings)
    run = config.run_config()
    with train_in_background(Job(config, run.preset, run.seed, data), progress=not args.no_progress) as worker:
        from reprolab.tracking.training_run import training_run

        with training_run(config, run, data, started_s_ago=worker.elapsed()) as tracked:
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
    from reprolab.audit.checks import seed_checks
    from reprolab.jobs.job import Job, scheduler_address
    from reprolab.jobs.sweep import run_sweep
    from reprolab.metrics import met_tag, target_met
    from reprolab.references import references
    from reprolab.report import comparison_table, per_seed_table, references_table, seeds_note
    from reprolab.results import runs_warnings
    from reprolab.tracking.runs import finish_summary, record_references, summary_run

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
    with summary_run(config, f"compare {', '.join(presets)}", "compare-summary", tags) as parent:

        def describe(job: Job, result) -> tuple[str, dict[str, str]]:
            met = target_met(result.metrics, config.data.target)
            return f"{job.preset}-seed{job.seed}", {"reprolab.target_met": met_tag(met)}

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
        table += "\n\n" + seeds_note(config.audit.confidence, len(args.seeds), config.data.target)
        found = references(config.references, data)
        reference_runs = record_references(config, parent, found, {"reprolab.dataset_digest": data.digest})
        shown = references_table(found, reference_runs)
        if shown:
            table += "\n\n" + shown
        seeds_table = per_seed_table(results, config.data.target)
        warned = runs_warnings(results, dict.fromkeys(presets, data.splits["train"].y), data.warnings)
        seeds_table += "".join(f"\n\n> **Warning.** {warning}" for warning in warned)
        reused = sum(run.reused for run in runs)
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "comparison.md"
            report.write_text(f"{table}\n\n{seeds_table}\n")
            finish_summary(
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
        from reprolab.audit.history import history_markdown, walk
        from reprolab.stages import metrics_file

        preset = args.preset or config.audit.after
        markdown = history_markdown(
            walk(Path.cwd(), preset, config.data.target, str(metrics_file(preset)), args.rev), str(metrics_file(preset))
        )
        _emit(markdown, args.output)
        return 0
    from reprolab import data as datasets
    from reprolab.audit.run import run_audit, side_from, side_from_run
    from reprolab.jobs.job import scheduler_address
    from reprolab.tracking.links import names_a_run

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
    from reprolab.audit.recheck import recheck
    from reprolab.jobs.job import scheduler_address
    from reprolab.reproduce.judge import IDENTICAL
    from reprolab.reproduce.run import reproduce, verdict_of

    config = training_config(args)
    outcomes, note, holds = reproduce(
        config,
        args.run,
        tolerance=args.tolerance,
        workers=args.workers or config.compute.workers,
        scheduler=scheduler_address(config.compute, args.scheduler),
        recheck=recheck,
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
    return 0 if holds else 1


def cmd_ui(args: argparse.Namespace) -> int:
    """Print the UI's links; for a SQLite store, serve MLflow's UI on 127.0.0.1 until Ctrl-C or
    SIGTERM, which stop every process it started (it runs in a process group of its own).
    MLflow's job runner (huey workers) stays off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says."""
    import os
    import subprocess

    from reprolab.config import load_config
    from reprolab.tracking.links import UI_ADDRESS, ui_links
    from reprolab.tracking.store import tracking_uri

    config = load_config(args.overrides, args.config_dir)
    port = str(args.port or UI_ADDRESS.rsplit(":", 1)[1])
    for what, link in ui_links(config, f"http://127.0.0.1:{port}").items():
        print(f"{what}: {link}", flush=True)
    uri = tracking_uri(config.tracking)
    if args.links_only or not uri.startswith("sqlite:"):
        return 0
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", port]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        return server.wait()
    finally:
        _stop_group(server)


def _stop_group(process) -> None:
    """SIGTERM to a process's group (it and everything it started), then SIGKILL to whatever of
    the group is left after 10 s."""
    import os
    import signal
    import subprocess

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        from reprolab.files import atomic_write

        atomic_write(Path(output), lambda tmp: tmp.write_text(text))
        print(f"wrote {output}", file=sys.stderr)
    print(text)
