"""Reproducing a run, or every run a summary run rests on: rebuild each, train it again with its
own code (in local processes or on Dask), judge and record each as it finishes, and say
whether a sweep's own verdict stands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from reprolab.config import Config
from reprolab.entrypoint import UserError, one_line
from reprolab.files import scratch_folder
from reprolab.jobs.recorded import train
from reprolab.jobs.run import call_each
from reprolab.record.code import CodeError
from reprolab.reproduce.judge import DIFFERS, IDENTICAL, WITHIN_NOISE, WITHIN_TOLERANCE, Outcome, judge
from reprolab.reproduce.rebuild import ReproduceError, rebuild
from reprolab.reproduce.record import drop_kept, keep_result, kept_result, record_reproduction, reproduction_summary
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
) -> list[Outcome]:
    """Rebuild every run here, train them again (in local processes or on Dask), then judge and
    record each as it finishes; a sweep's show a bar on a terminal (runs done, identical so far,
    time left)."""
    rebuilt = [rebuild(store, run, scratch / run.info.run_id) for run in runs]
    for trust in dict.fromkeys(r.trust for r in rebuilt if r.trust):
        print(f"reproduce: {trust}", file=sys.stderr, flush=True)
    outcomes: dict[int, Outcome] = {}
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
        outcomes[index] = outcome
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
    return [outcomes[index] for index in range(len(runs))]


def reproduce(
    config: Config,
    reference: str,
    tolerance: float = 0.0,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
) -> tuple[list[Outcome], Optional[str]]:
    """Reproduce the run `reference` names, or every run of a sweep's summary run (then with a
    note on whether the sweep's verdict stands)."""
    store = connect(config.tracking)
    run = resolve_run(store, reference)
    kind = run.data.tags.get("reprolab.kind", "")
    with scratch_folder("reprolab-reproduce-") as scratch:
        if not kind.endswith("-summary"):
            return _reproduce_all(store, [run], tolerance, Path(scratch), None, 1, None), None
        try:
            nested, reused = summarised_runs(store, run, Path(scratch))
        except UserError as error:
            raise ReproduceError(f"reproduce: {error}") from error
        if not nested and not reused:
            raise ReproduceError(f"reproduce: the summary run {run.info.run_id} holds no training runs to reproduce")
        with reproduction_summary(store, run) as (parent, finish):
            outcomes = _reproduce_all(store, nested + reused, tolerance, Path(scratch), parent, workers, scheduler)
            note = stands(run, outcomes, len(reused))
            finish(verdict_of(outcomes), note)
        return outcomes, note


def verdict_of(outcomes: list[Outcome]) -> str:
    """The weakest verdict among `outcomes`."""
    verdicts = {outcome.verdict for outcome in outcomes}
    return next((v for v in (DIFFERS, WITHIN_NOISE, WITHIN_TOLERANCE) if v in verdicts), IDENTICAL)


def stands(run, outcomes: list[Outcome], reused: int = 0) -> str:
    """What the reproduction says of a sweep's own verdict, which its runs' results decide
    (`reused`: how many of them it had reused from earlier runs)."""
    what = "audit's verdict" if run.data.tags.get("reprolab.kind") == "audit-summary" else "comparison"
    differing = [outcome for outcome in outcomes if not outcome.stands]
    counts = ", ".join(
        f"{sum(outcome.verdict == verdict for outcome in outcomes)} {verdict}"
        for verdict in (IDENTICAL, WITHIN_TOLERANCE, WITHIN_NOISE, DIFFERS)
        if any(outcome.verdict == verdict for outcome in outcomes)
    )
    checked = f"{len(outcomes)} runs checked, {len(outcomes) - reused} trained for it and {reused} it reused"
    if not differing and all(outcome.verdict == IDENTICAL for outcome in outcomes):
        return f"the {what} stands: every run it rests on stands ({checked}: {counts})"
    if not differing:  # its numbers moved, each within its seeds' noise: the sweep itself is not recomputed
        return (
            f"every run the {what} rests on stands ({checked}: {counts}), but its own numbers were not computed "
            f"again from the reproduced runs: rerun the sweep on this machine to see them"
        )
    return (
        f"the {what} is not confirmed: {len(differing)} of {len(outcomes)} runs do not stand ({checked}: {counts}); "
        f"rerun it on these results to see whether it still holds"
    )
