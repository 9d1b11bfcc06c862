"""Files the project writes and reads back: never half-written, and read with clear errors.

A stage's outputs belong together (a model and the summary that names its MLflow run), so a
stage writes them through `Outputs`: each file goes to a temporary name beside its target as
soon as it is ready, and only when all are written are they renamed into place. A failure
before that (a full disk, an unwritable folder, an error in a later step) leaves every old
output as it was.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from reprolab.entrypoint import UserError, one_line

if TYPE_CHECKING:
    import numpy as np


class FileFormatError(UserError, ValueError):
    """A file the project wrote earlier that is missing or cannot be read back."""


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
    return Path(tmp)


def check_output_path(path: Path) -> None:
    """Refuse to replace what is not an output of ours: a directory, a device, a FIFO or a
    socket (a rename would turn it into a regular file), or an `.npz` path that holds a file
    of another kind (someone's document, not an array file this project wrote)."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise FileFormatError(
            f"{path} is {kind}, not a regular file: an output would replace it; choose another output path"
        )
    if path.suffix == ".npz" and path.stat().st_size and not zipfile.is_zipfile(path):
        raise FileFormatError(
            f"{path} exists and is not an .npz array file: it is not an output of this project, so it is left as it "
            f"is; move it aside or choose another output path"
        )


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it into place."""
    with Outputs() as outputs:
        outputs.add(path, write)


class Outputs:
    """Files written to temporary names, renamed into place together when the block succeeds."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def add(self, path: Path, write: Callable[[Path], object]) -> Path:
        check_output_path(Path(path))
        tmp = _temporary(Path(path))
        self._staged.append((tmp, Path(path)))
        try:
            write(tmp)
        except OSError as error:  # name the output, not its temporary file
            raise OSError(error.errno, error.strerror, str(path)) from error
        return Path(path)

    def text(self, path: Path, text: str) -> Path:
        return self.add(path, lambda tmp: tmp.write_text(text))

    def json(self, path: Path, payload: Any) -> Path:
        return self.text(path, json.dumps(payload, indent=2) + "\n")

    def csv(self, path: Path, rows: list[dict], fields: list[str]) -> Path:
        return self.add(path, lambda tmp: write_csv(tmp, rows, fields))

    def copy(self, path: Path, source: Path) -> Path:
        return self.add(path, lambda tmp: shutil.copyfile(source, tmp))

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                for _, path in self._staged:  # what would stop a rename, found before the first one
                    check_output_path(path)
                for tmp, path in self._staged:
                    os.replace(tmp, path)
        finally:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)


def npz_writer(arrays: dict[str, np.ndarray]) -> Callable[[Path], object]:
    """A writer (for `Outputs.add`) of an `.npz` whose bytes depend only on the arrays.

    `np.savez` stamps each member with the current time, so the same data would give a new
    file (and a new DVC hash) on every run; fixed timestamps keep the file byte-identical.
    """
    import numpy as np

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.require(arrays[key], requirements="C"), allow_pickle=False)

    return write


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


# What a file read back must hold: a type (or tuple of types), or a dict of key -> shape.
Shape = Any


def shape_problem(value: Any, shape: Shape, where: str = "") -> Optional[str]:
    """Why `value` does not have `shape`, or None. A number is an int or a float, not a bool."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where.rstrip('.') or 'its content'} is not a mapping"
        for key, inner in shape.items():
            if key not in value:
                return f"{where}{key} is missing"
            problem = shape_problem(value[key], inner, f"{where}{key}.")
            if problem:
                return problem
        return None
    types = shape if isinstance(shape, tuple) else (shape,)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        return f"{where.rstrip('.')} is not {names}"
    return None


def read_json(path: Path, fix: str, shape: Shape = None) -> Any:
    """A JSON file this project wrote, checked against `shape`; `fix` says how to make it again."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileFormatError(f"{path} not found; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{path} is not valid JSON ({one_line(error)}); {fix}") from error
    problem = shape_problem(value, shape) if shape is not None else None
    if problem:
        raise FileFormatError(f"{path} is not what this project writes ({problem}); {fix}")
    return value


def read_csv(path: Path, fix: str, columns: Mapping[str, type]) -> list[dict[str, Any]]:
    """The rows of a CSV file this project wrote, each column converted to its type; `fix`
    says how to make the file again."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise FileFormatError(f"{path} not found; {fix}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise FileFormatError(f"{path} is not valid CSV ({one_line(error)}); {fix}") from error
    if not rows:
        raise FileFormatError(f"{path} holds no rows; {fix}")
    missing = [name for name in columns if name not in rows[0]]
    if missing:
        raise FileFormatError(f"{path} has no column {', '.join(missing)}; {fix}")
    converted = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        values = {}
        for name, kind in columns.items():
            try:
                values[name] = kind(row[name])
            except (TypeError, ValueError):
                raise FileFormatError(
                    f"{path} line {number}: {name} {str(row[name])[:40]!r} is not {kind.__name__}; {fix}"
                ) from None
        converted.append(values)
    return converted


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder that goes when the block ends, however this process ends: on a normal
    end or an error here, and, when the process is killed outright (SIGKILL, the OOM killer), by
    a watcher process forked for it, which waits for its parent to die and then removes the
    folder (Linux's parent-death signal). Elsewhere, as `tempfile.TemporaryDirectory`."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    watcher = _watch(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if watcher:
            try:
                os.kill(watcher, 9)
                os.waitpid(watcher, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _watch(folder: Path) -> Optional[int]:
    """Fork a process that removes `folder` once this one is gone; its pid (None off Linux)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:  # the watcher: only os calls, then _exit (nothing of the parent's runs here)
        os.closerange(3, 1 << 16)
        devnull = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1, 2):
            os.dup2(devnull, stream)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C or SIGTERM to the group is the parent's
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        libc.prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG: SIGUSR1 when the parent dies
        while os.getppid() == parent:  # checked after prctl: a parent gone meanwhile is seen here
            signal.sigtimedwait({signal.SIGUSR1}, 5.0)
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os._exit(0)
