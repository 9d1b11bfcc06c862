"""Training with the code a run recorded, not this checkout's: in a fresh Python process whose
`reprolab` is that code, unpacked from the run's source archive. `reprolab reproduce` trains a
run again this way; the audit trains this way the configurations of a side whose run was made
by other training code.

The contract with every recorded version is `reprolab.config.validate`, `reprolab.data.build`
and `reprolab.training.run_one`.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from reprolab import numerics
from reprolab.files import scratch_folder
from reprolab.record.code import CodeError, unpack

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


@dataclass
class TrainedElsewhere:
    """A training done by recorded code in its own process: the model stayed there."""

    device: str
    kernels: Optional[dict] = None
    model: None = None


def _killed_with_parent() -> Optional[Callable[[], None]]:
    """For `preexec_fn`: Linux's parent-death signal, resolved here, before any fork, so that the
    child between fork and exec calls one C function and takes no lock (threads hold them)."""
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


_KILLED_WITH_PARENT = _killed_with_parent()
_RUNNING: set[subprocess.Popen] = set()  # the recorded-code processes this one has started
_LOCK = threading.Lock()


def stop_running() -> None:
    """Kill every recorded-code process this one started and has not seen end: a command that is
    interrupted (Ctrl-C, SIGTERM) stops its retrainings at once instead of waiting for them."""
    with _LOCK:
        running = list(_RUNNING)
    for process in running:
        try:
            process.kill()
        except ProcessLookupError:
            pass


def _run_worker(folder: Path, task: str, args: list[str], timeout: Optional[float], mode: str) -> Any:
    """Run the worker script with the recorded code: killed with this process's thread that
    started it (Linux's parent-death signal), or by `stop_running`."""
    source, out = folder / "code" / "src", folder / "out.json"
    env = {**numerics.environment_for(mode, os.environ), "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-c", _WORKER, str(source), str(out), numerics.__file__, task, *args]
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_KILLED_WITH_PARENT,
    )
    with _LOCK:
        _RUNNING.add(process)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        process.kill()
        process.communicate()
        raise CodeError(f"it did not answer within {timeout:.0f} s") from error
    finally:
        with _LOCK:
            _RUNNING.discard(process)
        if process.poll() is None:  # this thread was interrupted: the process must not outlive it
            process.kill()
            process.wait()
    if process.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        raise CodeError(lines[-1] if lines else f"exit status {process.returncode}")
    return json.loads(out.read_text())


def _fit_schema(params: dict, folder: Path) -> None:
    """Code recorded before compute.numerics existed refuses the key: its process gets the mode
    through the environment alone (`numerics.environment_for`). Code from before `references`
    refuses that key too, which changes no training, and code from before k-fold the audit's
    resampling keys and a `data.fold` of null (a fold it is asked to train, it refuses)."""
    package = folder / "code" / "src" / "reprolab"
    if not (package / "numerics.py").is_file():
        (params.get("compute") or {}).pop("numerics", None)
    if not (package / "references.py").is_file():
        params.pop("references", None)
    if not (package / "data" / "folds.py").is_file():
        for key in ("resampling", "folds", "repeats"):
            (params.get("audit") or {}).pop(key, None)
        data = params.get("data") or {}
        if "fold" in data and data["fold"] is None:
            del data["fold"]


def train(archive: bytes, params: dict, data_file: Optional[tuple[str, bytes]], preset: str, seed: int) -> dict:
    """Train `preset` with `seed` of the configuration `params` (tracking off) with the archive's
    code in a fresh process, here or on a Dask worker: the result, the device, and the source
    files that no longer match the archive's manifest. CodeError says why it could not."""
    with scratch_folder("reprolab-retrain-") as folder:
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
    with scratch_folder("reprolab-check-") as folder:
        unpack(archive, folder)
        paths = []
        for index, params in enumerate(configs):
            params = copy.deepcopy(params)
            _fit_schema(params, folder)
            paths.append(folder / f"params-{index}.yaml")
            paths[-1].write_text(yaml.safe_dump(params, sort_keys=False))
        return _run_worker(folder, "check", [str(path) for path in paths], 300, numerics.current_mode())
