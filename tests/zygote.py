"""A warm interpreter for the tests' `reprolab` and `dvc` commands and DVC's stages: a test-only
fork server.

Every `reprolab ...` and `dvc ...` a test runs through `conftest.sh`/`conftest.reprolab`, and every
`python -m reprolab...` stage that DVC runs for it, would import MLflow, SQLAlchemy, alembic,
pandas, DVC, celery, networkx, ... afresh: one to three seconds of a core, hundreds of times per
suite. This server imports them once; a stand-in `python`, `reprolab` and `dvc` (first on the PATH
of those commands) hand their command line, working directory, environment and standard streams to
it, and it forks a child that runs the command as `python -m` or the console script would, and
returns its exit status. A CPU build of torch is preloaded too, so that reprolab's training
workers, forked from the command (`reprolab.jobs.worker_context`), skip its import; a GPU build is not (a
driver that holds one starts its workers as fresh interpreters, another path than a fresh command
takes). reprolab itself is not preloaded: each command imports it from its own checkout.

The stand-ins fall back to the real interpreter whenever the server is not there, so a test never
depends on it; tests of process behaviour (signals, resource limits, DVC's process tree) start real
processes (`conftest.clean_env()` without `warm=True`). The daemons DVC starts (its queue's
workers) are real processes too: DVC starts them with `sys.executable`.

Run as `python zygote.py SOCKET`; `write_shims` makes the stand-ins. Written by hand:
multiprocessing's forkserver runs picklable callables for its own parent, not another program's
command line and streams.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import io
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path

import yaml

PRELOAD = (
    "numpy",
    "pandas",
    "yaml",
    "omegaconf",
    "hydra",
    "psutil",
    "tqdm",
    "sqlalchemy",
    "alembic.script",
    "alembic.runtime.migration",
    "mlflow",
    "mlflow.tracking",
    "mlflow.models",
    "mlflow.pyfunc",
    "mlflow.data",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.db.utils",
    "mlflow.tracing.processor.base_mlflow",
    "git",
    "matplotlib",
    "matplotlib.pyplot",
    # What `dvc status`, `repro`, `exp run/show`, `queue`, `plots`, `params/metrics` and `dag` import.
    "dvc.cli",
    "dvc.cli.parser",
    "dvc._debug",
    "dvc.repo",
    "dvc.repo.index",
    "dvc.repo.reproduce",
    "dvc.repo.checkout",
    "dvc.repo.status",
    "dvc.repo.graph",
    "dvc.repo.brancher",
    "dvc.repo.collect",
    "dvc.repo.stage",
    "dvc.repo.trie",
    "dvc.repo.experiments.run",
    "dvc.repo.experiments.show",
    "dvc.repo.experiments.brancher",
    "dvc.repo.experiments.queue.celery",
    "dvc.repo.experiments.queue.tempdir",
    "dvc.repo.experiments.queue.workspace",
    "dvc.repo.plots",
    "dvc.repo.metrics.show",
    "dvc.repo.metrics.diff",
    "dvc.repo.params.show",
    "dvc.repo.params.diff",
    "dvc.cachemgr",
    "dvc.data_cloud",
    "dvc.dagascii",
    "dvc.dirs",
    "dvc.ui.table",
    "dvc.ui.pager",
    "dvc.utils.strictyaml",
    "dvc.utils.diff",
    "dvc.utils.table",
    "dvc.commands.dag",
    "dvc.render.match",
    "dvc_render",
    "dvc_task.proc.manager",
    "dvc_task.app.filesystem",
    "dvc_data.fs",
    "dvc_data.hashfile.db.local",
    "scmrepo.fs",
    "scmrepo.git.backend.pygit2",
    "scmrepo.git.backend.dulwich",
    "pygit2",
    "dulwich.ignore",
    "dulwich.worktree",
    "networkx",
    "celery",
    "celery.worker",
    "celery.app.control",
    "kombu",
    "rich.console",
    "rich.table",
    "ruamel.yaml",
    "grandalf",
    "pyparsing",
    "platformdirs",
)
SOCKET_VARIABLE = "REPROLAB_TEST_ZYGOTE"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

# The stand-in: stdlib only, started with -I -S (no site-packages) so it starts in milliseconds.
SHIM = """#!{python} -IS
import json, os, signal, socket, struct, sys

PYTHON, VARIABLE = {python!r}, {variable!r}
SCRIPT = os.path.join({bin_dir!r}, os.path.basename(sys.argv[0]))  # reprolab's or DVC's
FORWARDED = {forwarded!r}


def fallback(args):
    target = PYTHON if os.path.basename(sys.argv[0]) == "python" else SCRIPT
    os.execv(target, [target, *args])


def main():
    args, path = sys.argv[1:], os.environ.get(VARIABLE)
    if os.path.basename(sys.argv[0]) == "python":
        if not (path and len(args) >= 2 and args[0] == "-m" and args[1].split(".")[0] == "reprolab"):
            fallback(args)
        request = {{"module": args[1], "argv": ["-m", *args[2:]]}}
    else:
        if not path:
            fallback(args)
        request = {{"script": SCRIPT, "argv": [SCRIPT, *args]}}
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(path)
    except OSError:
        fallback(args)
    umask = os.umask(0)
    os.umask(umask)
    request.update(cwd=os.getcwd(), env=dict(os.environ), umask=umask)
    body = json.dumps(request).encode()
    socket.send_fds(server, [b"x"], [0, 1, 2])
    server.sendall(struct.pack("!Q", len(body)) + body)
    for signum in FORWARDED:
        signal.signal(signum, lambda number, frame: server.send(bytes([number])))
    if os.environ.get("DVC_STAGE"):  # a stage gets SIGTERM when DVC dies: forward it (entrypoint)
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGTERM))
    answer = b""
    while not answer.endswith(b"\\n"):
        chunk = server.recv(64)
        if not chunk:
            print("reprolab test zygote: lost the command's process", file=sys.stderr)
            os._exit(1)
        answer += chunk
    code = int(answer)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


main()
"""


def write_shims(folder: str, bin_dir: str) -> None:
    """The stand-ins `python`, `reprolab` and `dvc` in `folder`, for the interpreter and scripts in `bin_dir`."""
    text = SHIM.format(
        python=os.path.join(bin_dir, "python"),
        bin_dir=bin_dir,
        variable=SOCKET_VARIABLE,
        forwarded=tuple(int(s) for s in FORWARDED),
    )
    for name in ("python", "reprolab", "dvc"):
        path = os.path.join(folder, name)
        with open(path, "w") as out:
            out.write(text)
        os.chmod(path, 0o755)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the stand-in went away")
        data += chunk
    return data


def _exit_code(error: SystemExit) -> int:
    """What the interpreter makes of SystemExit(code)."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code & 0xFF
    print(error.code, file=sys.stderr)
    return 1


def _text_stream(fd: int, mode: str, encoding: str, errors: str, line_buffering: bool = False) -> io.TextIOWrapper:
    """A standard stream on `fd` as the interpreter opens it (unbuffered with PYTHONUNBUFFERED)."""
    unbuffered = mode == "w" and bool(os.environ.get("PYTHONUNBUFFERED"))
    raw = io.FileIO(fd, mode, closefd=False)
    binary: io.RawIOBase | io.BufferedIOBase
    if mode == "r":
        binary = io.BufferedReader(raw)
    elif unbuffered:
        binary = raw
    else:
        binary = io.BufferedWriter(raw)
    return io.TextIOWrapper(
        binary, encoding=encoding, errors=errors, line_buffering=line_buffering, write_through=unbuffered
    )


def _run_command(request: dict, fds: list[int], base_path: list[str]) -> None:
    """In the forked child: become the requested command, run it, exit as the interpreter would."""
    for number, fd in enumerate(fds):
        if fd != number:
            os.dup2(fd, number)
            os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in {*FORWARDED, signal.SIGCHLD} - {signal.SIGINT}:
        signal.signal(signum, signal.SIG_DFL)
    encoding, errors = sys.stdout.encoding, sys.stdout.errors  # the server's, opened from the same environment
    sys.stdin = sys.__stdin__ = _text_stream(0, "r", encoding, errors)
    sys.stdout = sys.__stdout__ = _text_stream(1, "w", encoding, errors, line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = _text_stream(2, "w", encoding, "backslashreplace", line_buffering=True)
    first = request["cwd"] if "module" in request else os.path.dirname(request["script"])
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [first, *extra, *base_path]
    importlib.invalidate_caches()
    import numpy

    numpy.random.seed()  # a fresh process seeds NumPy's global generator from the OS
    sys.argv = list(request["argv"])
    code, interrupted = 0, False
    try:
        if "module" in request:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as error:
        code = _exit_code(error)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  (what the interpreter does at exit)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _supervise(connection: socket.socket, base_path: list[str]) -> None:
    """In a child of the server: receive one command, fork it, forward signals to it, kill it if
    the stand-in dies, send its exit status back."""
    _, fds, _, _ = socket.recv_fds(connection, 1, 3)
    (size,) = struct.unpack("!Q", _receive(connection, 8))
    request = json.loads(_receive(connection, size))
    print("served", request.get("module") or request["script"], flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        try:
            connection.close()
            _run_command(request, fds, base_path)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux before 5.3: look every 50 ms
        pidfd = None
    while True:
        watched = [connection] if pidfd is None else [connection, pidfd]
        ready, _, _ = select.select(watched, [], [], 0.05 if pidfd is None else None)
        if pidfd in ready or (pidfd is None and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)):
            break
        if connection not in ready:
            continue
        data = connection.recv(64)
        for signum in data or [signal.SIGKILL]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        if not data:
            break
    _, status = os.waitpid(pid, 0)
    try:
        connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:
        pass


def _cpu_build_of_torch() -> bool:
    """What torch/version.py says, read without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    version: dict = {}
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as source:
            exec(compile(source.read(), "torch/version.py", "exec"), version)
    except OSError:
        return False
    return not (version.get("cuda") or version.get("hip"))


def _portable_numerics() -> None:
    """Start torch as a command in conf/'s default mode does (compute.numerics, reprolab.numerics:
    read as a file, since reprolab itself is not preloaded). A command in another mode stops with
    one line here: tests of other kernels run their commands as fresh interpreters."""
    root = Path(__file__).resolve().parents[1]
    mode = yaml.safe_load((root / "conf" / "config.yaml").read_text())["compute"]["numerics"]
    numerics = runpy.run_path(str(root / "src" / "reprolab" / "numerics.py"))
    os.environ.update(numerics["environment_for"](mode, os.environ))


def serve(path: str) -> None:
    """Preload, then fork a supervisor for each stand-in that connects to `path`."""
    # As reprolab.tracking does before it imports MLflow: no telemetry client, no thread to fork.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cpu_torch = _cpu_build_of_torch()
    if cpu_torch:
        _portable_numerics()  # before NumPy loads its OpenBLAS, which picks its kernels then
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as error:
            print(f"not preloaded: {name}: {error}", flush=True)
    if cpu_torch:
        importlib.import_module("torch")
        # What a training worker's first optimizer imports (torch.optim disables dynamo on it): 2 s.
        importlib.import_module("torch._dynamo")
    try:  # MLflow's map of installed packages, which each model's logging builds (0.8 s) and caches
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()
    except Exception as error:
        print(f"not preloaded: MLflow's package map: {error}", flush=True)
    if "reprolab" in sys.modules:
        print("refusing to serve: reprolab was preloaded", flush=True)
        return
    own = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    base_path = [entry for entry in sys.path[1:] if entry not in own]
    sys.stdout.flush()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the supervisors are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(128)
    print("serving", flush=True)
    while True:
        connection, _ = server.accept()
        if os.fork() == 0:
            try:
                server.close()
                _supervise(connection, base_path)
            finally:
                os._exit(0)
        connection.close()


if __name__ == "__main__":
    serve(sys.argv[1])
