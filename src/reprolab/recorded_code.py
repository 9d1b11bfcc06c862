"""Training with the code a run recorded, not this checkout's: in a fresh Python process whose
`reprolab` is that code, unpacked from the run's source archive (else git's archive of its
commit). `reprolab reproduce` trains a run again this way; the audit trains this way the
configurations of a side whose run was made by other training code.

The contract with every recorded version is `reprolab.config.validate`, `reprolab.data.build`
and `reprolab.training.run_one`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from reprolab import numerics, provenance
from reprolab.entrypoint import UserError, one_line
from reprolab.sources import code_digest

TRAINING_MODULE = "reprolab.training"  # the module whose import closure is "the training code"
THIS_CHECKOUT = "this checkout's code"

# Run by the recorded code in its own process: train one run, or check configurations.
_WORKER = """
import json, runpy, sys, yaml
import reprolab
from reprolab.config import validate
code, out, numerics_file, task, *args = sys.argv[1:]
if not reprolab.__file__.startswith(code):
    sys.exit(f"the recorded code did not load: reprolab came from {reprolab.__file__}")
if task == "check":
    errors = []
    for path in args:
        try:
            validate(yaml.safe_load(open(path)))
            errors.append(None)
        except Exception as error:
            errors.append(" ".join(str(error).split()) or type(error).__name__)
    open(out, "w").write(json.dumps(errors))
else:
    from reprolab.data import build
    from reprolab.training import run_one
    params, preset, seed = args
    config = validate(yaml.safe_load(open(params)))
    trained, result = run_one(config, preset, int(seed), build(config.data), progress=False)
    kernels = runpy.run_path(numerics_file)["in_effect"]()  # told by the reproducing code, not the recorded
    done = {"result": json.loads(result.to_json()), "device": trained.device, "kernels": kernels}
    open(out, "w").write(json.dumps(done))
"""


class CodeError(UserError, RuntimeError):
    """Recorded code that cannot be had, or that cannot train what it was given."""


@dataclass(frozen=True)
class RecordedCode:
    """The code a run recorded: its archive, its source as the run's tags describe it, the digest
    of its training code (as a run key holds it) and how messages name it."""

    archive: bytes
    source: provenance.Source
    training_digest: str
    label: str


@dataclass
class TrainedElsewhere:
    """A training done by recorded code in its own process: the model stayed there."""

    device: str
    kernels: Optional[dict] = None
    model: None = None


def archive_of(run, folder: Path, store, command: str) -> bytes:
    """The run's source archive, else git's archive of its commit from this repository."""
    from reprolab import tracking

    archive = tracking.download(store, run.info.run_id, f"{tracking.SOURCE_FOLDER}/{provenance.ARCHIVE}", folder)
    if archive is not None:
        return archive.read_bytes()
    commit = run.data.tags.get("reprolab.source.commit") or run.data.tags.get("mlflow.source.git.commit")
    root = tracking.repo_root()
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


def unpack(archive: bytes, folder: Path) -> dict:
    """The archive unpacked into `folder/code`; its manifest (`provenance.read_archive`)."""
    (folder / provenance.ARCHIVE).write_bytes(archive)
    try:
        return provenance.read_archive(folder / provenance.ARCHIVE, folder / "code")
    except (OSError, ValueError, KeyError, tarfile.TarError) as error:
        raise CodeError(f"the run's source archive is unreadable ({one_line(error)})") from error


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
    source = provenance.Source(
        manifest.get("digest") or manifest["digest_now"],
        archive,
        manifest.get("files") or {},
        manifest.get("git_head") or tags.get("mlflow.source.git.commit"),
        commit,
        {"true": True, "false": False}.get(tags.get("reprolab.git_dirty", "")),
    )
    where = f"commit {commit[:12]}" if commit else f"source {source.digest[:12]}…"
    return RecordedCode(archive, source, training, f"the code of run {run.info.run_id[:8]} ({where})")


def _run_worker(folder: Path, task: str, args: list[str], timeout: Optional[float], mode: str) -> Any:
    source, out = folder / "code" / "src", folder / "out.json"
    env = {**numerics.environment_for(mode, os.environ), "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-c", _WORKER, str(source), str(out), numerics.__file__, task, *args]
    try:
        done = subprocess.run(
            command, cwd=folder, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        raise CodeError(f"it did not answer within {timeout:.0f} s") from error
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise CodeError(lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(out.read_text())


def _fit_schema(params: dict, folder: Path) -> None:
    """Code recorded before compute.numerics existed refuses the key: its process gets the mode
    through the environment alone (`numerics.environment_for`)."""
    if not (folder / "code" / "src" / "reprolab" / "numerics.py").is_file():
        (params.get("compute") or {}).pop("numerics", None)


def train(archive: bytes, params: dict, data_file: Optional[tuple[str, bytes]], preset: str, seed: int) -> dict:
    """Train `preset` with `seed` of the configuration `params` (tracking off) with the archive's
    code in a fresh process, here or on a Dask worker: the result, the device, and the source
    files that no longer match the archive's manifest. CodeError says why it could not."""
    with tempfile.TemporaryDirectory(prefix="reprolab-retrain-") as scratch:
        folder = Path(scratch)
        manifest = unpack(archive, folder)
        params = copy.deepcopy(params)
        if data_file is not None:
            (folder / "data").mkdir()
            (folder / "data" / data_file[0]).write_bytes(data_file[1])
            params["data"]["user_file"] = str(folder / "data" / data_file[0])
        params["data"]["prepared_path"] = str(folder / "prepared.npz")
        params["tracking"]["enabled"] = False
        mode = numerics.mode_of(params)
        _fit_schema(params, folder)
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        again = _run_worker(folder, "train", [str(folder / "params.yaml"), preset, str(seed)], None, mode)
        return {**again, "altered": manifest["altered"], "digest_now": manifest["digest_now"]}


def config_errors(archive: bytes, configs: list[dict]) -> list[Optional[str]]:
    """For each configuration, why the archive's code refuses it (None: it takes it); one process."""
    with tempfile.TemporaryDirectory(prefix="reprolab-check-") as scratch:
        folder = Path(scratch)
        unpack(archive, folder)
        paths = []
        for index, params in enumerate(configs):
            params = copy.deepcopy(params)
            _fit_schema(params, folder)
            paths.append(folder / f"params-{index}.yaml")
            paths[-1].write_text(yaml.safe_dump(params, sort_keys=False))
        return _run_worker(folder, "check", [str(path) for path in paths], 300, numerics.current_mode())
