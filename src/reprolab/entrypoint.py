"""How every entry point (the `reprolab` command, each DVC stage) starts and ends.

- Bad input is a `UserError`: one line on stderr, exit status 2, no traceback.
- An operating-system error (disk full, permission denied, a directory where a file should
  be) is reported the same way, naming the path: it is the user's machine that needs fixing.
- SIGINT and SIGTERM raise `KeyboardInterrupt` whatever disposition the process inherited (a
  background job of a non-interactive shell inherits SIGINT as *ignored*, and Python then never
  raises it), so open MLflow runs end KILLED and temporary files are removed; a second signal
  exits at once. Exit status 130.

This module imports nothing heavy: entry points install the handlers first, so a signal that
arrives while torch or MLflow are still being imported is honoured too.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional

INTERRUPTED = 130


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


_received: list[int] = []
_deferring = [0]  # depth of nested `signals_deferred` blocks
_pending: list[int] = []
_dropped: list[int] = []  # interrupts that Python dropped (see _redeliver_dropped_interrupt)
MAX_DROPPED = 3


def raise_on_signal(signum: int, frame: object) -> None:
    """The handler install_signal_handlers installs (see the module's rules)."""
    if _received:
        os._exit(INTERRUPTED)  # the second signal: stop now, without cleanup
    _received.append(signum)
    if _deferring[0]:
        _pending.append(signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """A signal that arrives inside the block takes effect when it ends. For calls to the MLflow
    store: one interrupted halfway can leave SQLite's transaction open, and the call that then
    marks the run KILLED waited 20 s on its lock here. A second signal still exits at once."""
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
        if not _deferring[0] and _pending:
            raise KeyboardInterrupt(signal.Signals(_pending.pop()).name)


def _redeliver_dropped_interrupt(unraisable: Any) -> None:
    """sys.unraisablehook: Python drops an exception raised where it cannot propagate (a
    callback after fork, a finalizer) with "Exception ignored in". A KeyboardInterrupt of
    raise_on_signal dropped there is sent again a moment later, from a thread (raised in this
    hook, it would be dropped too), or the signal would be lost and the command go on. A
    signal dropped time after time exits at once."""
    if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _received):
        sys.__unraisablehook__(unraisable)
        return
    signum = _received.pop()
    _dropped.append(signum)
    if len(_dropped) > MAX_DROPPED:
        os._exit(INTERRUPTED)
    again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
    again.daemon = True
    again.start()


def install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt in this process, even if inherited as ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_on_signal)
    sys.unraisablehook = _redeliver_dropped_interrupt


def warn(warnings: Sequence[str]) -> None:
    """Print each warning on its own line to stderr: what may mislead, and what to do about it."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def one_line(error: BaseException) -> str:
    """An exception's message as one line (the first non-empty one)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def os_error_message(error: OSError) -> str:
    """`OSError` as one line that names the path and what to do about the common causes."""
    where = f"{error.filename}: " if error.filename else ""
    reason = error.strerror or one_line(error)
    hints = {
        errno.EFBIG: "the file outgrew a size limit (ulimit -f); raise it or free space and rerun",
        errno.ENOSPC: "free some disk space and rerun",
        errno.EDQUOT: "the disk quota is used up; free some space and rerun",
        errno.EACCES: "check the permissions of that path",
        errno.EROFS: "the file system is read-only",
        errno.EISDIR: "a directory stands where a file is expected",
        errno.ENOTDIR: "a file stands where a directory is expected",
    }
    hint = hints.get(error.errno or 0)
    return f"{where}{reason}" + (f" ({hint})" if hint else "")


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask Linux to send `signum` to this process when the process that started it dies (a
    no-op elsewhere). A worker is killed with its driver; a DVC stage gets SIGTERM when `dvc
    repro` is stopped, so it ends its run KILLED and writes nothing, instead of finishing behind
    DVC's back with `dvc.lock` left stale."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signum))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"}


def _parent_of(pid: int) -> Optional[int]:
    """The parent of process `pid` as Linux reports it, or None (gone, or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command name, in (), may hold spaces


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def stop_with_dvc(poll_s: float = 0.5) -> None:
    """Under `dvc repro`, get SIGTERM when DVC dies (see die_with_parent). DVC runs a stage as
    `$SHELL -c CMD`: bash replaces itself with the command, so DVC is our parent; dash waits
    for it, so DVC is the shell's parent, and a thread watches the shell lose it."""
    die_with_parent(signal.SIGTERM)
    parent = os.getppid()
    if parent == 1:  # DVC was gone before the request was made
        sys.exit(INTERRUPTED)
    if _comm(parent) not in SHELLS:
        return
    dvc = _parent_of(parent)
    if dvc is None or dvc == 1:
        sys.exit(INTERRUPTED)

    def watch() -> None:
        while _parent_of(parent) == dvc:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="reprolab-stop-with-dvc", daemon=True).start()


def run(main: Callable[[], int]) -> NoReturn:
    """Call `main` under the rules above and exit with its status (a stage's `__main__`); under
    `dvc repro` the stage stops with DVC."""
    if os.environ.get("DVC_STAGE"):
        stop_with_dvc()
    sys.exit(call(main))


def call(main: Callable[[], int], program: str = "reprolab") -> int:
    """Call `main` under the rules above; return its exit status."""
    install_signal_handlers()
    try:
        code = main()
    except UserError as error:
        print(f"{program}: error: {one_line(error)}", file=sys.stderr)
        code = 2
    except OSError as error:
        print(f"{program}: error: {os_error_message(error)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        code = INTERRUPTED
    sys.stdout.flush()
    return code
