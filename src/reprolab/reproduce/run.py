"""Reproducing a run, or every run a summary run rests on: rebuild each, train it again with its
own code (in local processes or on Dask), judge and record each as it finishes, and say
whether a sweep's own verdict stands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from reprolab.config import Config
from reprolab.entrypoint import UserError, one_line
from reprolab.files import scratch_folder
from reprolab.jobs.recorded import train
from reprolab.jobs.run import call_each
from reprolab.record.code import CodeError
from reprolab.reproduce.judge import DIFFERS, IDENTICAL, WITHIN_NOISE, WITHIN_TOLERANCE, Outcome, judge
from reprolab.reproduce.rebuild import Rebuilt, ReproduceError, rebuild
from reprolab.reproduce.record import drop_kept, keep_result, kept_result, record_reproduction, reproduction_summary
from reprolab.results import RunResult
from reprolab.tracking.cache import same_configuration
from reprolab.tracking.failures import TrackingError, redact
from reprolab.tracking.links import resolve_run
from reprolab.tracking.runs import summarised_runs
from reprolab.tracking.store import Store, connect


def retrain(archive: bytes, params: dict, data_file: Optional[tuple[str, bytes]], preset: str, seed: int) -> dict:
    """Train a rebuilt run with its own code in a fresh process, here or on a Dask worker
    (`train`)."""
    try:
        return train(archive, params, data_file, preset, seed)
    except CodeError as error:
        raise ReproduceError(f"reproduce: the run's code failed to train again: {error}") from error


def _reproduce_all(
    store: Store,
    runs: list,
    tolerance: float,
    scratch: Path,
    parent: Optional[str],
    workers: Optional[int],
    scheduler: Optional[str],
) -> tuple[list[Rebuilt], list[Outcome], list[RunResult]]:
    """Rebuild every run here, train them again (in local processes or on Dask), then judge and
    record each as it finishes; a sweep's show a bar on a terminal (runs done, identical so far,
    time left). The rebuilt runs, their outcomes and their new results, in the order given."""
    rebuilt = [rebuild(store, run, scratch / run.info.run_id) for run in runs]
    for trust in dict.fromkeys(r.trust for r in rebuilt if r.trust):
        print(f"reproduce: {trust}", file=sys.stderr, flush=True)
    outcomes: dict[int, Outcome] = {}
    results: dict[int, RunResult] = {}
    bar = tqdm(total=len(runs), desc="reproduce", unit="run", disable=None if len(runs) > 1 else True, leave=False)

    def finish(index: int, again: dict) -> None:
        original = rebuilt[index].run
        try:
            others = same_configuration(store, original)
            outcome, result, here = judge(rebuilt[index], again, tolerance, others)
            outcome.reproduction_id = record_reproduction(store, original, result, outcome.as_dict(), here, parent)
        except TrackingError as error:
            path = keep_result(rebuilt[index], again)
            raise ReproduceError(
                f"reproduce: the MLflow store {redact(store.uri)} stopped answering before the reproduction of run "
                f"{original.info.run_id} was recorded ({one_line(error.__cause__ or error)[:160]}); its retrained "
                f"result is kept in {path}: once the store answers, `reprolab reproduce {original.info.run_id}` "
                f"records it without training again"
            ) from error
        drop_kept(original.info.run_id)
        outcomes[index], results[index] = outcome, result
        bar.update(1)
        bar.set_postfix(identical=sum(o.verdict == IDENTICAL for o in outcomes.values()))

    todo = []
    for index, each in enumerate(rebuilt):
        again, note = kept_result(each)
        if again is None:
            if note:
                print(f"reproduce: {note}", file=sys.stderr, flush=True)
            todo.append(index)
            continue
        print(
            f"reproduce: run {each.run.info.run_id}: recording the result its retraining gave here at {note}, kept "
            f"when the store was lost (not training again)",
            file=sys.stderr,
            flush=True,
        )
        finish(index, again)
    calls = [(r.archive, r.params, r.data_file, r.preset, r.seed) for r in (rebuilt[i] for i in todo)]
    try:
        call_each(retrain, calls, lambda j, again: finish(todo[j], again), workers=workers, scheduler=scheduler)
    finally:
        bar.close()
    order = range(len(runs))
    return rebuilt, [outcomes[index] for index in order], [results[index] for index in order]


# Makes a sweep's claims again from its runs' records and reproductions (`reprolab.audit.recheck`):
# given by the command, since reproducing and the audit do not import each other.
Recheck = Callable[[Store, Any, Path, list], dict[str, Any]]


def reproduce(
    config: Config,
    reference: str,
    tolerance: float = 0.0,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    recheck: Optional[Recheck] = None,
) -> tuple[list[Outcome], Optional[str], bool]:
    """Reproduce the run `reference` names, or every run of a sweep's summary run, then with a
    note on whether the sweep's verdict stands, made again by `recheck` from the reproduced runs
    where their bits moved. The outcomes, the note, and whether the result stands."""
    store = connect(config.tracking)
    run = resolve_run(store, reference)
    kind = run.data.tags.get("reprolab.kind", "")
    with scratch_folder("reprolab-reproduce-") as scratch:
        if not kind.endswith("-summary"):
            _, outcomes, _ = _reproduce_all(store, [run], tolerance, Path(scratch), None, 1, None)
            return outcomes, None, outcomes[0].stands
        try:
            nested, reused = summarised_runs(store, run, Path(scratch))
        except UserError as error:
            raise ReproduceError(f"reproduce: {error}") from error
        if not nested and not reused:
            raise ReproduceError(f"reproduce: the summary run {run.info.run_id} holds no training runs to reproduce")
        with reproduction_summary(store, run) as (parent, finish):
            rebuilt, outcomes, results = _reproduce_all(
                store, nested + reused, tolerance, Path(scratch), parent, workers, scheduler
            )
            made_again = None
            if recheck is not None and any(outcome.verdict != IDENTICAL for outcome in outcomes):
                reruns = [
                    (r.run.info.run_id, r.params, r.data_file, r.original, again) for r, again in zip(rebuilt, results)
                ]
                made_again = recheck(store, run, Path(scratch) / "recheck", reruns)
            note, holds = stands(run, outcomes, len(reused), made_again)
            finish(verdict_of(outcomes) if holds else DIFFERS, note, {"made_again": made_again})
        return outcomes, note, holds


def verdict_of(outcomes: list[Outcome]) -> str:
    """The weakest verdict among `outcomes`."""
    verdicts = {outcome.verdict for outcome in outcomes}
    return next((v for v in (DIFFERS, WITHIN_NOISE, WITHIN_TOLERANCE) if v in verdicts), IDENTICAL)


def _first_changes(changed: Sequence[dict]) -> str:
    shown = "; ".join(f"{c['claim']}: {c['recorded']} recorded, {c['now']} now" for c in changed[:3])
    return shown + (f" (+{len(changed) - 3} more)" if len(changed) > 3 else "")


def stands(
    run, outcomes: list[Outcome], reused: int = 0, made_again: Optional[dict[str, Any]] = None
) -> tuple[str, bool]:
    """What the reproduction says of a sweep's own verdict (`reused`: how many of its runs it had
    reused from earlier runs), from `made_again` (`Recheck`'s numbers) where the runs' bits moved,
    and whether it stands: every run stands and, made again, every claim is the same."""
    what = "audit's verdict" if run.data.tags.get("reprolab.kind") == "audit-summary" else "comparison"
    differing = [outcome for outcome in outcomes if not outcome.stands]
    counts = ", ".join(
        f"{sum(outcome.verdict == verdict for outcome in outcomes)} {verdict}"
        for verdict in (IDENTICAL, WITHIN_TOLERANCE, WITHIN_NOISE, DIFFERS)
        if any(outcome.verdict == verdict for outcome in outcomes)
    )
    checked = f"{len(outcomes)} runs checked, {len(outcomes) - reused} trained for it and {reused} it reused"
    runs_text = "every run it rests on stands"
    if differing:
        runs_text = f"{len(differing)} of {len(outcomes)} runs do not stand"
    if not differing and all(outcome.verdict == IDENTICAL for outcome in outcomes):
        return f"the {what} stands: every run it rests on is identical ({checked}: {counts})", True
    if made_again is None or made_again.get("unavailable"):
        why = made_again["unavailable"] if made_again else "not asked for"
        return (
            f"{runs_text} ({checked}: {counts}), but the {what} was not made again from the reproduced runs ({why}): "
            f"rerun the sweep on this machine to see it"
        ), not differing
    own = (
        ""
        if made_again.get("same_as_recorded") is not False
        else (
            " (this code makes the recorded runs' verdict otherwise than the sweep wrote it: the claims compared are "
            "this code's, from the recorded and from the reproduced runs)"
        )
    )
    if made_again["changed"]:
        return (
            f"the {what} does not stand: made again from the reproduced runs, {_first_changes(made_again['changed'])}"
            f"{own}; {runs_text} ({checked}: {counts})"
        ), False
    moved = made_again["largest_move"]
    largest = ""
    if moved:
        largest = (
            f"; the mean that moved most: {moved['mean']} {moved['recorded']:.4f} recorded, {moved['now']:.4f} now"
            if moved["difference"]
            else "; every mean is the same"
        )
    count = made_again["claims"]
    claims = f"its {count} claim{'s are' if count > 1 else ' is'} the same" if count else "it makes no claim"
    verb = "stands" if not differing else "stands, though not every run does"
    return (
        f"the {what} {verb}: made again from the reproduced runs, {claims}{largest}{own}; {runs_text} "
        f"({checked}: {counts})"
    ), not differing
