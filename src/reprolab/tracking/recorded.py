"""A run's recorded code read back from the store: its source archive (else git's archive of
its commit), checked against the archive's manifest.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from reprolab.record.code import TRAINING_MODULE, CodeError, RecordedCode, unpack
from reprolab.record.source import ARCHIVE, Source
from reprolab.sources import code_digest


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
        done = subprocess.run(
            ["git", "archive", "--format=tar.gz", "-o", str(tar), commit, "--", "src", "conf"],
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
