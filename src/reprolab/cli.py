"""The `reprolab` command: a thin layer over the package's functions.

Every command takes Hydra override strings after its options, e.g.
`reprolab train experiment=baseline seed=3 experiments.baseline.train.lr=0.005`.
Every training it does is recorded in MLflow (`tracking=none` turns that off). Bad input ends
with one line on stderr and exit status 2 (see `reprolab.entrypoint`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, Optional

from reprolab import entrypoint
from reprolab.commands import cmd_audit, cmd_compare, cmd_compose, cmd_prepare, cmd_reproduce, cmd_train, cmd_ui

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
    ui_cmd.add_argument("--port", type=positive, default=None, help="serve on this port of 127.0.0.1 (default 5000)")
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
