"""What a training run recorded, read back from the store and checked before anything uses it:
its code (its source archive, else git's archive of its commit), checked against the archive's
manifest and the run's source digest; its configuration, checked against its digest and the
params it logged; and, with a signing key set, its signature (`reprolab.record.signing`).
Nothing that disagrees with its record is run, reused or reported.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from reprolab.config import flatten
from reprolab.entrypoint import UserError
from reprolab.record.code import TRAINING_MODULE, CodeError, RecordedCode, unpack
from reprolab.record.signing import check as check_signature
from reprolab.record.signing import text_sha256
from reprolab.record.source import ARCHIVE, SOURCE_PATHS, Source
from reprolab.sources import code_digest
from reprolab.tracking.artifacts import CONFIG_DIGEST_TAG, PARAMS_ARTIFACT, RUN_ARTIFACT, download


def archive_of(run, folder: Path, store, command: str) -> bytes:
    """The run's source archive, else git's archive of its commit from this repository."""
    from reprolab.tracking.artifacts import SOURCE_FOLDER, download
    from reprolab.tracking.store import repo_root

    archive = download(store, run.info.run_id, f"{SOURCE_FOLDER}/{ARCHIVE}", folder)
    if archive is not None:
        return archive.read_bytes()
    commit = run.data.tags.get("reprolab.source.commit") or run.data.tags.get("mlflow.source.git.commit")
    root = repo_root()
    if commit:
        tar = folder / "commit.tar.gz"
        listed = subprocess.run(
            ["git", "ls-tree", "--name-only", commit, "--", *SOURCE_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        done = subprocess.run(
            ["git", "archive", "--format=tar.gz", "-o", str(tar), commit, "--", *(listed.stdout.split() or ["src"])],
            cwd=root,
            capture_output=True,
            timeout=120,
        )
        if done.returncode == 0:
            return tar.read_bytes()
    raise CodeError(
        f"{command}: run {run.info.run_id} recorded no source archive, and its commit {commit or '(none)'} is not in "
        f"the git repository at {root}; run {command} in a clone that has it (`git fetch`)"
    )


def of_run(run, store, folder: Path, command: str) -> RecordedCode:
    """The code that made `run`, checked against its archive's manifest: an archive whose files
    no longer match it is not the code that trained the run."""
    archive = archive_of(run, folder, store, command)
    with tempfile.TemporaryDirectory(prefix="reprolab-code-") as scratch:
        try:
            manifest = unpack(archive, Path(scratch))
        except CodeError as error:
            raise CodeError(f"{command}: run {run.info.run_id}: {error}") from error
        if manifest["altered"]:
            raise CodeError(
                f"{command}: run {run.info.run_id}'s source archive no longer matches its manifest (altered: "
                f"{', '.join(manifest['altered'][:3])}): it is not the code that trained the run"
            )
        training = code_digest(TRAINING_MODULE, Path(scratch) / "code" / "src" / "reprolab")
    tags = run.data.tags
    recorded = tags.get("reprolab.source.digest")
    if recorded and manifest["digest_now"] != recorded:
        commit = tags.get("reprolab.source.commit") or tags.get("mlflow.source.git.commit")
        origin = "its source archive" if manifest.get("files") is not None else f"its commit {commit}"
        raise CodeError(
            f"{command}: run {run.info.run_id}: {origin} holds source {manifest['digest_now'][:12]}…, not the source "
            f"it recorded ({recorded[:12]}…, tag reprolab.source.digest): it is not the code that trained the run, so "
            f"it is not run"
        )
    commit = manifest.get("git_commit") or tags.get("reprolab.source.commit") or tags.get("mlflow.source.git.commit")
    source = Source(
        manifest.get("digest") or manifest["digest_now"],
        archive,
        manifest.get("files") or {},
        manifest.get("git_head") or tags.get("mlflow.source.git.commit"),
        commit,
        {"true": True, "false": False}.get(tags.get("reprolab.git_dirty", "")),
    )
    where = f"commit {commit[:12]}" if commit else f"source {source.digest[:12]}…"
    return RecordedCode(archive, source, training, f"the code of run {run.info.run_id[:8]} ({where})")


class RecordError(UserError, ValueError):
    """A recorded run whose artifacts disagree with what it logged."""


@dataclass(frozen=True)
class RecordedConfig:
    """A run's whole configuration (`config/params.yaml`), its own part (`config/run.yaml`) and
    how far its record can be trusted, in words (signed or not)."""

    params: dict
    run: dict
    trust: str


def recorded_config(store, run, folder: Path, command: str) -> Optional[RecordedConfig]:
    """The run's configuration artifacts, checked: their digest against the run's tag, the run's
    settings against the params it logged (what the UI shows) and against its preset in
    params.yaml, and its signature when a key is set. None when the run has no such artifacts
    (not a training run); RecordError names the first key that disagrees."""
    run_id, what = run.info.run_id, f"{command}: MLflow run {run.info.run_id}"
    trust = check_signature(run.data.tags, what)
    params_file = download(store, run_id, PARAMS_ARTIFACT, folder)
    run_file = download(store, run_id, RUN_ARTIFACT, folder)
    if params_file is None or run_file is None:
        return None
    params_text, run_text = params_file.read_text(), run_file.read_text()
    params, chosen = yaml.safe_load(params_text), yaml.safe_load(run_text)
    settings = {key: str(value) for key, value in flatten(chosen).items()}
    for key in sorted(set(settings) | set(run.data.params)):
        if settings.get(key) != run.data.params.get(key):
            raise RecordError(
                f"{what}: its {RUN_ARTIFACT} has {key}={settings.get(key, '(none)')}, but the run logged "
                f"{key}={run.data.params.get(key, '(none)')}: its record was changed after the run; it is not used"
            )
    preset = (params.get("experiments") or {}).get(chosen.get("preset")) or {}
    for part in ("model", "train"):
        ours, theirs = flatten(preset.get(part) or {}), flatten(chosen.get(part) or {})
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                name = f"experiments.{chosen.get('preset')}.{part}.{key}"
                raise RecordError(
                    f"{what}: its {PARAMS_ARTIFACT} has {name}={ours.get(key, '(none)')}, but the run trained with "
                    f"{theirs.get(key, '(none)')} ({RUN_ARTIFACT}, its logged params): its record was changed after "
                    f"the run; it is not used"
                )
    # Anything else changed (the data settings, say): no key to name, but not the recorded files.
    recorded = run.data.tags.get(CONFIG_DIGEST_TAG)
    if recorded and text_sha256(params_text, run_text) != recorded:
        raise RecordError(
            f"{what}: its {PARAMS_ARTIFACT} or {RUN_ARTIFACT} is not the one it recorded (digest "
            f"{text_sha256(params_text, run_text)[:12]}…, recorded {recorded[:12]}…): it was changed in the store; "
            f"it is not used"
        )
    # A record from before `references` existed showed none; one from before k-fold had the
    # splits as they are and audits on the validation split. These keys change no result.
    params.setdefault("references", [])
    params.get("data", {}).setdefault("fold", None)
    for key, value in (("resampling", "holdout"), ("folds", 5), ("repeats", 2)):
        params.get("audit", {}).setdefault(key, value)
    return RecordedConfig(params, chosen, trust or "")
