"""Reproduce a recorded run from its MLflow run id, and say whether the result is the same.

In: a reference to a run (`reprolab.tracking.resolve_run`). For a training run, its record is
read back and what made it is rebuilt in a scratch folder, never in the user's workspace:
- the code: the run's source archive (`reprolab.provenance`), else its commit from git;
- the configuration: the run's `config/params.yaml`;
- the data: generated again from the generator settings, or the user's file found by its
  digests at its recorded path, in DVC's cache, or through DVC from the run's commit;
- the environment: this one, compared with the run's `environment.json`.
The run is trained again by its own code, in a separate Python process whose `reprolab` is
the captured one. Out: a verdict per run (`identical`, `within tolerance`, or `differs` with the
first epoch and metric where the two part), recorded as a run linked to the original, with the
original tagged. A sweep's summary run reproduces all of its runs.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from tqdm.auto import tqdm

from reprolab import provenance, recorded_code, tracking
from reprolab.config import Config, TargetConfig, validate
from reprolab.entrypoint import UserError
from reprolab.jobs import call_each
from reprolab.metrics import HEADLINE, describe_target, has_target, meets_target, with_gap
from reprolab.results import HISTORY_KEYS, RunResult

IDENTICAL, WITHIN_TOLERANCE, WITHIN_NOISE, DIFFERS = "identical", "within tolerance", "within noise", "differs"
STANDING = (IDENTICAL, WITHIN_TOLERANCE, WITHIN_NOISE)  # verdicts under which the result stands
MIN_SEEDS = 3  # runs of a configuration, the original's included, that its seed-to-seed spread needs


class ReproduceError(UserError, RuntimeError):
    """A run that cannot be rebuilt: its code, data or record cannot be had."""


@dataclass
class Outcome:
    """One run's reproduction: the numbers that decide its verdict (bits, then the result
    against its configuration's seed-to-seed spread, and the run's claims) and why bits differ."""

    run_id: str
    name: str
    verdict: str  # identical, within tolerance, within noise, differs
    first_difference: Optional[str] = None
    differences: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    altered_code: list[str] = field(default_factory=list)
    reproduction_id: Optional[str] = None
    causes: list[str] = field(default_factory=list)  # why the bits differ, the likeliest first
    noise: dict[str, dict[str, float]] = field(default_factory=dict)  # judged metric -> recorded, now, spread
    seeds: int = 0  # runs of the configuration the spread is measured over
    claims: list[dict[str, Any]] = field(default_factory=list)  # claim, recorded, now
    unjudged: Optional[str] = None  # why the result could not be judged against its noise

    @property
    def stands(self) -> bool:
        return self.verdict in STANDING

    def summary(self) -> str:
        """The verdict in words, made from the numbers above only."""
        text = f"{self.name} ({self.run_id}): "
        broken = [claim["claim"] for claim in self.claims if claim["recorded"] != claim["now"]]
        beyond = [key for key, judged in self.noise.items() if judged["difference"] > judged["spread"]]
        if self.verdict == WITHIN_NOISE:
            largest = max(self.noise, key=lambda key: self.noise[key]["difference"])
            judged = self.noise[largest]
            text += (
                f"differs within noise: the result stands (largest change {largest} {judged['difference']:.4f}, "
                f"seed-to-seed spread {judged['spread']:.4f} over {self.seeds} seeds)"
            )
        elif self.verdict != DIFFERS:
            text += self.verdict
        elif broken:
            text += "differs: " + "; ".join(f"{claim} no longer holds" for claim in broken)
        elif beyond:
            judged = self.noise[beyond[0]]
            text += (
                f"differs: {beyond[0]} changed by {judged['difference']:.4f}, beyond its seed-to-seed spread "
                f"{judged['spread']:.4f} over {self.seeds} seeds: the result does not stand"
            )
        else:
            text += f"differs: {self.unjudged or 'the result does not stand'}"
        if self.verdict != IDENTICAL:
            if self.causes:
                text += f"; cause: {self.causes[0]}" + (
                    f" (+{len(self.causes) - 1} more)" if len(self.causes) > 1 else ""
                )
            else:
                text += "; cause: none recorded (same kernels, libraries, code and data)"
        if self.first_difference:
            text += f"; first difference: {self.first_difference}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "stands": self.stands, "summary": self.summary()}


# -- the verdict -------------------------------------------------------------------------------


def _numbers_differ(old: Any, new: Any, tolerance: float) -> bool:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return abs(float(old) - float(new)) > tolerance
    return old != new


def _number_differences(original: RunResult, again: RunResult, tolerance: float) -> list[str]:
    """Per-epoch history first (the first entry is where the two runs part), the fit, then the
    final metrics: each that differs by more than `tolerance`."""
    found: list[str] = []
    for old, new in zip(original.history, again.history):
        for key in HISTORY_KEYS:
            if _numbers_differ(old.get(key), new.get(key), tolerance):
                found.append(f"epoch {int(old['epoch'])}, {key}: {old.get(key)} recorded, {new.get(key)} now")
    if len(original.history) != len(again.history):
        found.append(f"epochs run: {len(original.history)} recorded, {len(again.history)} now")
    for key in ("best_epoch", "epochs_run", "stopped_early"):
        if original.fit.get(key) != again.fit.get(key):
            found.append(f"{key}: {original.fit.get(key)} recorded, {again.fit.get(key)} now")
    for key in sorted(set(original.metrics) | set(again.metrics)):
        if _numbers_differ(original.metrics.get(key), again.metrics.get(key), tolerance):
            found.append(f"{key}: {original.metrics.get(key)} recorded, {again.metrics.get(key)} now")
    return found


def compare(original: RunResult, again: RunResult, tolerance: float = 0.0) -> tuple[str, list[str]]:
    """The verdict, and every difference in order: the numbers (`_number_differences`), then
    predictions and the weights' digest. Within a tolerance, only the numbers are judged."""
    exact = _number_differences(original, again, 0.0)
    for split in sorted(set(original.predictions) | set(again.predictions)):
        old_p, new_p = original.predictions.get(split, []), again.predictions.get(split, [])
        changed = sum(a != b for a, b in zip(old_p, new_p)) + abs(len(old_p) - len(new_p))
        if changed:
            exact.append(f"{split} predictions: {changed} of {len(old_p)} differ")
    if original.weights_sha256 and original.weights_sha256 != again.weights_sha256:
        exact.append(f"weights: digest {original.weights_sha256[:12]}… recorded, {again.weights_sha256[:12]}… now")
    if not exact:
        return IDENTICAL, []
    beyond = _number_differences(original, again, tolerance)
    if tolerance > 0 and not beyond:
        return WITHIN_TOLERANCE, exact
    return DIFFERS, beyond + [d for d in exact if d not in beyond]


# -- rebuilding ----------------------------------------------------------------------------------


@dataclass
class Rebuilt:
    """What one run needs to be trained again, as plain values that travel (to a Dask worker)."""

    run: Any
    archive: bytes  # the source: the run's archive, else git's archive of its commit
    params: dict  # its config/params.yaml, tracking off
    data_file: Optional[tuple[str, bytes]]  # the user file's name and bytes
    preset: str
    seed: int
    original: RunResult
    environment: dict


def _dvc_cached(root: Path, md5: str) -> Optional[Path]:
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            path = Path(repo.cache.local.oid_to_path(md5))
        return path if path.is_file() else None
    except Exception:  # not a DVC repository, or no cache: look elsewhere
        return None


def _dvc_remote(root: Path, name: str, commit: Optional[str], into: Path) -> Optional[Path]:
    try:
        import dvc.api

        with dvc.api.open(name, repo=str(root), rev=commit, mode="rb") as stream, into.open("wb") as copy:
            shutil.copyfileobj(stream, copy)
        return into
    except Exception:  # not tracked by DVC at that commit, or no remote holds it
        return None


def _user_file(run, raw: dict, folder: Path) -> Path:
    """The run's user file with the SHA-256 it was recorded with, copied into `folder`."""
    tags = run.data.tags
    name, sha, md5 = (
        tags.get("reprolab.data.file"),
        tags.get("reprolab.data.file_sha256"),
        tags.get("reprolab.data.file_md5"),
    )
    name = name or raw["data"]["user_file"]
    root = tracking.repo_root()
    copy = folder / "data" / Path(name).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    at_path = Path(name) if Path(name).is_absolute() else root / name
    candidates = [at_path] + ([c] if md5 and (c := _dvc_cached(root, md5)) else [])
    for candidate in candidates:
        if candidate.is_file() and (sha is None or provenance.file_digests(candidate)["sha256"] == sha):
            shutil.copyfile(candidate, copy)
            return copy
    commit = tags.get("mlflow.source.git.commit")
    fetched = _dvc_remote(root, name, commit, copy)
    if fetched is not None and (sha is None or provenance.file_digests(fetched)["sha256"] == sha):
        return fetched
    raise ReproduceError(
        f"reproduce: the data file {name} of run {run.info.run_id} (md5 {md5 or '?'}, sha256 {(sha or '?')[:12]}…) "
        f"is neither at its path, nor in DVC's cache, nor in the DVC remote; run `dvc pull` (or `dvc fetch`) in a "
        f"clone that has it, or put that file back at {name}"
    )


def rebuild(store: tracking.Store, run, folder: Path) -> Rebuilt:
    """Read back what made `run`: its code, configuration, data, environment and result."""
    run_id = run.info.run_id
    folder.mkdir(parents=True, exist_ok=True)
    params_file = tracking.download(store, run_id, "config/params.yaml", folder)
    run_file = tracking.download(store, run_id, "config/run.yaml", folder)
    result_file = tracking.download(store, run_id, tracking.RESULT_FILE, folder)
    if params_file is None or run_file is None or result_file is None:
        raise ReproduceError(
            f"reproduce: MLflow run {run_id} ({run.info.run_name}) is not a training run that finished: it has no "
            f"config/params.yaml, config/run.yaml or {tracking.RESULT_FILE}"
        )
    try:  # what the UI shows of the run must be what its result.json holds
        original = tracking.checked_result(store, run, folder / "checked", history=True, untagged=True)
    except ValueError as error:
        raise ReproduceError(
            f"reproduce: MLflow run {run_id} ({run.info.run_name}): {error}: its record was changed after the run, "
            f"so there is no honest result to compare with"
        ) from error
    raw = yaml.safe_load(params_file.read_text())
    chosen = yaml.safe_load(run_file.read_text())
    data_file = None
    if raw["data"].get("source") == "npz":
        found = _user_file(run, raw, folder)
        data_file = (found.name, found.read_bytes())
    raw["tracking"]["enabled"] = False
    environment_file = tracking.download(store, run_id, tracking.ENVIRONMENT_FILE, folder)
    return Rebuilt(
        run,
        recorded_code.archive_of(run, folder, store, "reproduce"),
        raw,
        data_file,
        chosen["preset"],
        int(chosen["seed"]),
        original,
        json.loads(environment_file.read_text()) if environment_file else {},
    )


def retrain(archive: bytes, params: dict, data_file: Optional[tuple[str, bytes]], preset: str, seed: int) -> dict:
    """Train a rebuilt run with its own code in a fresh process, here or on a Dask worker
    (`recorded_code.train`)."""
    try:
        return recorded_code.train(archive, params, data_file, preset, seed)
    except recorded_code.CodeError as error:
        raise ReproduceError(f"reproduce: the run's code failed to train again: {error}") from error


def judge(
    rebuilt: Rebuilt, again: dict, tolerance: float, others: Sequence[Any] = ()
) -> tuple[Outcome, RunResult, dict]:
    """The outcome of one reproduction, the new result, and the environment it ran in. Where
    the bits differ, the result is judged against `others`, the runs of its configuration over
    other seeds (`tracking.same_configuration`), and the run's claims are made again."""
    run = rebuilt.run
    result = RunResult.from_json(json.dumps(again["result"]))
    verdict, differences = compare(rebuilt.original, result, tolerance)
    here = provenance.environment(again["device"], again.get("kernels"))
    altered = list(again["altered"])
    recorded = run.data.tags.get("reprolab.source.digest")
    if recorded and recorded != again["digest_now"] and not altered:
        altered = ["(the archive's manifest)"]
    groups = provenance.difference_groups(rebuilt.environment, here) if rebuilt.environment else None
    outcome = Outcome(
        run.info.run_id,
        run.info.run_name,
        verdict,
        differences[0] if differences else None,
        differences,
        provenance.environment_differences(rebuilt.environment, here) if groups is not None else ["not recorded"],
        altered,
    )
    data_differs = result.dataset_digest != rebuilt.original.dataset_digest
    if data_differs:
        outcome.first_difference = (
            f"dataset digest {rebuilt.original.dataset_digest[:12]}… recorded, {result.dataset_digest[:12]}… now"
        )
    if verdict != IDENTICAL:
        groups = groups or {"kernels": ["the run recorded no environment"], "libraries": [], "machine": []}
        outcome.causes = [
            *groups["kernels"],
            *groups["libraries"],
            *(f"code: {name} altered since the run" for name in altered),
            *([f"data: {outcome.first_difference}"] if data_differs else []),
            *groups["machine"],
        ]
    if verdict == DIFFERS:
        _judge_result(outcome, rebuilt, result, others)
    if data_differs:
        outcome.verdict = DIFFERS
    return outcome, result, here


def _target(params: dict) -> Optional[TargetConfig]:
    """The run's target, read by this code's schema (None when it has none, or cannot be read)."""
    try:
        target = validate(copy.deepcopy(params)).data.target
    except UserError:
        return None
    return target if has_target(target) else None


def _judge_result(outcome: Outcome, rebuilt: Rebuilt, again: RunResult, others: Sequence[Any]) -> None:
    """Whether the result stands though its bits differ: each headline metric's change against
    the seed-to-seed spread of its configuration (sample standard deviation over the seeds the
    store holds, this run's included), and each claim (target met or missed, over seeds too)."""
    old, new = with_gap(rebuilt.original.metrics), with_gap(again.metrics)
    seeds = [
        with_gap(run.data.metrics) for run in others if {"train_accuracy", "val_accuracy"} <= set(run.data.metrics)
    ]
    target = _target(rebuilt.params)
    if target is not None:
        met_before, met_now = meets_target(old, target), meets_target(new, target)
        outcome.claims.append(
            {
                "claim": f"target {'met' if met_before else 'missed'} ({describe_target(target)})",
                "recorded": met_before,
                "now": met_now,
            }
        )
        if seeds:
            others_met = sum(meets_target(metrics, target) for metrics in seeds)
            outcome.claims.append(
                {
                    "claim": f"target met by {others_met + met_before} of {len(seeds) + 1} seeds",
                    "recorded": others_met + met_before,
                    "now": others_met + met_now,
                }
            )
    outcome.seeds = len(seeds) + 1
    if outcome.seeds < MIN_SEEDS:
        outcome.unjudged = (
            f"cannot judge the noise: the store holds {outcome.seeds} run(s) of this configuration and a spread needs "
            f"{MIN_SEEDS} seeds (reproduce a compare's or an audit's summary run, or record more seeds with "
            f"`reprolab compare --seeds 0-4`)"
        )
    else:
        for key in HEADLINE:
            spread = statistics.stdev([metrics[key] for metrics in seeds] + [old[key]])
            outcome.noise[key] = {
                "recorded": old[key],
                "now": new[key],
                "difference": abs(new[key] - old[key]),
                "spread": spread,
            }
    broken = any(claim["recorded"] != claim["now"] for claim in outcome.claims)
    beyond = any(judged["difference"] > judged["spread"] for judged in outcome.noise.values())
    if outcome.noise and not broken and not beyond:
        outcome.verdict = WITHIN_NOISE


def _reproduce_all(
    store: tracking.Store,
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
    outcomes: dict[int, Outcome] = {}
    bar = tqdm(total=len(runs), desc="reproduce", unit="run", disable=None if len(runs) > 1 else True, leave=False)

    def finish(index: int, again: dict) -> None:
        others = tracking.same_configuration(store, rebuilt[index].run)
        outcome, result, here = judge(rebuilt[index], again, tolerance, others)
        outcome.reproduction_id = tracking.record_reproduction(
            store, rebuilt[index].run, result, outcome.as_dict(), here, parent
        )
        outcomes[index] = outcome
        bar.update(1)
        bar.set_postfix(identical=sum(o.verdict == IDENTICAL for o in outcomes.values()))

    calls = [(r.archive, r.params, r.data_file, r.preset, r.seed) for r in rebuilt]
    try:
        call_each(retrain, calls, finish, workers=workers, scheduler=scheduler)
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
    store = tracking.connect(config.tracking)
    run = tracking.resolve_run(store, reference)
    kind = run.data.tags.get("reprolab.kind", "")
    with tempfile.TemporaryDirectory(prefix="reprolab-reproduce-") as scratch:
        if not kind.endswith("-summary"):
            return _reproduce_all(store, [run], tolerance, Path(scratch), None, 1, None), None
        try:
            nested, reused = tracking.summarised_runs(store, run, Path(scratch))
        except UserError as error:
            raise ReproduceError(f"reproduce: {error}") from error
        if not nested and not reused:
            raise ReproduceError(f"reproduce: the summary run {run.info.run_id} holds no training runs to reproduce")
        with tracking.reproduction_summary(store, run) as (parent, finish):
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
