"""A sweep's verdict made again from reproduced runs: the audit's (each configuration against
the target, each change needed or sufficient, which shares can be told from chance and which is
the largest) or the comparison's (each preset against the target), computed by this code from
the recorded results and from the reproduced ones, and every claim that differs between the two.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from reprolab import data as datasets
from reprolab.audit.checks import VariantCheck, seed_checks
from reprolab.audit.design import AFTER, Change, side_of
from reprolab.audit.kfold import pooled
from reprolab.audit.verdict import AuditSummary, summarize
from reprolab.config import Config, validate
from reprolab.entrypoint import UserError
from reprolab.metrics import target_keys
from reprolab.results import RunResult
from reprolab.tracking.artifacts import download

AUDIT_SUMMARY = "audit-summary/summary.json"  # where run_audit's finish_summary puts it
AUDIT_RUNS = "audit-summary/runs.csv"
Rerun = tuple[str, dict, Optional[tuple[str, bytes]], RunResult, RunResult]  # run id, params, data file, recorded, now


def _sign(low: float, high: float) -> str:
    return "above 0" if low > 0 else ("below 0" if high < 0 else "not told from 0")


def _checks_claims(checks: dict[str, VariantCheck]) -> dict[str, str]:
    return {f"{label} meets the target": check.judged() for label, check in checks.items() if check.targeted}


def _checks_numbers(checks: dict[str, VariantCheck]) -> dict[str, float]:
    return {f"{label} {key}": value.mean for label, check in checks.items() for key, value in check.stats.items()}


def audit_claims(summary: AuditSummary) -> dict[str, str]:
    """What the audit's verdict says, one value per claim (not its numbers)."""
    claims = {f"{summary.before} overfits beyond noise": str(summary.gap_before), **_checks_claims(summary.variants)}
    for effect in summary.effects:
        if effect.needed != "n/a":
            claims[f"{effect.change.name} is needed"] = effect.needed
        if effect.sufficient != "n/a":
            claims[f"{effect.change.name} is enough alone"] = effect.sufficient
    for key in (target_keys(summary.target)[0], "train_val_gap"):
        attribution = summary.attribution[key]
        for name, share in attribution.shares.items():
            claims[f"{name}'s share of {key}"] = _sign(share.low, share.high)
        lead = attribution.lead
        told = lead is not None and lead.clear and not attribution.shares[lead.largest].contains(0.0)
        claims[f"the largest share of {key}"] = lead.largest if lead is not None and told else "none named"
    return claims


def audit_numbers(summary: AuditSummary) -> dict[str, float]:
    """The audit's means: each configuration's metrics and each change's share."""
    shares = {
        f"{name}'s share of {key}": share.mean
        for key, attribution in summary.attribution.items()
        for name, share in attribution.shares.items()
    }
    return {**_checks_numbers(summary.variants), **shares}


def changed(
    recorded: tuple[dict[str, str], dict[str, float]], now: tuple[dict[str, str], dict[str, float]]
) -> dict[str, Any]:
    """The claims made from the recorded runs and from the reproduced ones, and their means:
    how many claims, those that differ, and the mean that moved most."""
    (old_claims, old_numbers), (new_claims, new_numbers) = recorded, now
    moved = max(old_numbers, key=lambda key: abs(new_numbers[key] - old_numbers[key]), default=None)
    return {
        "claims": len(old_claims),
        "changed": [
            {"claim": claim, "recorded": value, "now": new_claims.get(claim)}
            for claim, value in old_claims.items()
            if new_claims.get(claim) != value
        ],
        "largest_move": None
        if moved is None
        else {
            "mean": moved,
            "recorded": old_numbers[moved],
            "now": new_numbers[moved],
            "difference": abs(new_numbers[moved] - old_numbers[moved]),
        },
    }


def _config(params: dict, data_file: Optional[tuple[str, bytes]], folder: Path, whole: bool = False) -> Config:
    """A run's configuration read by this code, its user file (if any) written into `folder`;
    `whole`: without its fold, the dataset its folds come from."""
    params = copy.deepcopy(params)
    if data_file is not None:
        path = folder / f"data-{len(list(folder.glob('data-*')))}" / data_file[0]
        path.parent.mkdir(parents=True)
        path.write_bytes(data_file[1])
        params["data"]["user_file"] = str(path)
    if whole:
        params["data"]["fold"] = None
    return validate(params)


def _datasets(reruns: Sequence[Rerun], folder: Path) -> dict[str, datasets.Dataset]:
    """Each dataset the runs trained on, by digest, built by this code from a run's own data
    settings and checked against the digest its runs recorded."""
    built: dict[str, datasets.Dataset] = {}
    for _, params, data_file, recorded, _ in reruns:
        if recorded.dataset_digest not in built:
            data = datasets.build(_config(params, data_file, folder).data)
            if data.digest != recorded.dataset_digest:
                raise UserError(
                    f"this checkout builds the runs' data with digest {data.digest[:12]}…, they recorded "
                    f"{recorded.dataset_digest[:12]}…"
                )
            built[data.digest] = data
    return built


def _roles(store: Any, summary_run: Any, folder: Path, audit: bool) -> list[tuple[str, str, int]]:
    """(run id, label, seed) of every run the sweep rests on, as the sweep used it: a reused run
    stands in under the sweep's own label and seed (an audit's runs.csv, a comparison's
    `reprolab.run.<preset>-seed<seed>` tags)."""
    if not audit:
        tags = summary_run.data.tags
        named = [(key.removeprefix("reprolab.run."), run_id) for key, run_id in tags.items()]
        return [
            (run_id, name.rsplit("-seed", 1)[0], int(name.rsplit("-seed", 1)[1]))
            for name, run_id in named
            if name != tags.get(name) and run_id != "-" and "-seed" in name
        ]
    path = download(store, summary_run.info.run_id, AUDIT_RUNS, folder)
    if path is None:
        raise UserError(f"the audit's run holds no {AUDIT_RUNS}")
    with path.open() as rows:
        return [(row["mlflow_run_id"], row["configuration"], int(row["seed"])) for row in csv.DictReader(rows)]


def recheck(store: Any, summary_run: Any, folder: Path, reruns: Sequence[Rerun]) -> dict[str, Any]:
    """The sweep's claims made again (`changed`), from the recorded and the reproduced results,
    with the target, confidence and data of its runs' own records; `unavailable` says why they
    could not be, and `same_as_recorded` whether the recorded results give the verdict the sweep
    wrote (False: this code makes it otherwise)."""
    audit = summary_run.data.tags.get("reprolab.kind") == "audit-summary"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pairs = {run_id: (old, new) for run_id, _, _, old, new in reruns}
        roles = _roles(store, summary_run, folder, audit)
        if not roles or any(run_id not in pairs for run_id, _, _ in roles):
            raise UserError("the runs it lists are not the runs it rests on")
        recorded = [dataclasses.replace(pairs[run_id][0], preset=label, seed=seed) for run_id, label, seed in roles]
        now = [dataclasses.replace(pairs[run_id][1], preset=label, seed=seed) for run_id, label, seed in roles]
        built = _datasets(reruns, folder)
        params = {run_id: (own, data_file) for run_id, own, data_file, _, _ in reruns}
        own = next((params[run_id][0] for run_id, label, _ in roles if label == AFTER), reruns[-1][1])
        config = validate(copy.deepcopy(own))  # the target and confidence of its runs' record (after's)
        target, confidence = config.data.target, config.audit.confidence
        if not audit:
            (data,) = built.values()  # a comparison is made on one dataset
            made = [seed_checks(results, data.labels(), target, confidence) for results in (recorded, now)]
            found = changed(*[(_checks_claims(checks), _checks_numbers(checks)) for checks in made])
            return {**found, "unavailable": None, "same_as_recorded": None}
        path = download(store, summary_run.info.run_id, AUDIT_SUMMARY, folder)
        if path is None:
            raise UserError(f"the audit's run holds no {AUDIT_SUMMARY}")
        written = json.loads(path.read_text())
        changes = [Change(name, {k: tuple(v) for k, v in c["keys"].items()}) for name, c in written["changes"].items()]
        if written.get("resampling", {}).get("method") == "kfold":
            folds = [validate(copy.deepcopy(params[run_id][0])).data.fold for run_id, _, _ in roles]
            first = {side_of(label): run_id for run_id, label, _ in reversed(roles)}  # a run of each side
            wholes = {side: _config(*params[run_id], folder, whole=True) for side, run_id in first.items()}
            sides = {side: (datasets.build(c.data), c.data.split_seed) for side, c in wholes.items()}
            for side, (data, _) in sides.items():
                if data.digest != written["dataset_digests"][side]:
                    raise UserError(f"this checkout builds the {side} side's whole dataset with another digest")
            (measured_then, labels), (measured_now, _) = (
                pooled(list(zip(results, folds)), sides) for results in (recorded, now)
            )
            made_from: tuple[list, list] = (measured_then, measured_now)
        else:
            labels = {side_of(r.preset): built[r.dataset_digest].labels() for r in recorded}
            made_from = (recorded, now)
        summaries = [
            summarize(
                results,
                changes,
                written["before"],
                written["after"],
                target,
                written["confidence"],
                written["dataset_digests"],
                labels,
                written.get("resampling"),
            )
            for results in made_from
        ]
    except (UserError, KeyError, ValueError) as error:
        return {"unavailable": f"cannot make it again here: {error}"}
    found = changed(*[(audit_claims(summary), audit_numbers(summary)) for summary in summaries])
    return {**found, "unavailable": None, "same_as_recorded": summaries[0].verdict == written["verdict"]}
