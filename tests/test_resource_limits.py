"""Resource limits reach the user as one line that names the limit, never as a traceback: a
file-size limit (`ulimit -f`) during a local sweep and on the SQLite store, a store whose
creation the limit stopped. Every file is under the test's temporary directory."""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPROLAB, clean_env, quick_overrides

pytestmark = pytest.mark.slow  # each test runs `reprolab`, which trains or creates MLflow stores


def run_limited(tmp_path: Path, limit_bytes: int | None, *args: str) -> subprocess.CompletedProcess:
    """`reprolab ARGS` in tmp_path under a file-size limit (None: none, and in the warm
    interpreter, which cannot pass a limit on)."""

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [*REPROLAB, *args], cwd=tmp_path, env=clean_env(warm=limit_bytes is None), preexec_fn=limit,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_local_sweep_under_a_file_size_limit_returns_its_results(tmp_path):
    """Workers hand their results back as plain pickle: multiprocessing's pickler would pass the
    tensors through shared-memory files, which the limit refused with a torch traceback."""
    done = run_limited(
        tmp_path, 20 * 1024, "compare", "--seeds", "0", "--presets", "baseline,gru", "--workers", "2",
        *quick_overrides(tmp_path), "tracking=none",
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "| baseline | 0 |" in done.stdout and "| gru | 0 |" in done.stdout


def test_a_store_that_cannot_grow_is_one_line_naming_the_limit(tmp_path):
    train = ["train", "--no-progress", *quick_overrides(tmp_path)]
    store = tmp_path / "mlflow.db"
    first = run_limited(tmp_path, 300 * 1024, *train)  # too small for MLflow to create its tables
    assert first.returncode == 2 and "Traceback" not in first.stderr, first.stderr
    (line,) = first.stderr.strip().splitlines()
    assert f"MLflow store {store} cannot grow" in line and "ulimit -f: 307200 bytes" in line, line
    # The store is made under another name and moved into place once complete: nothing is left
    # half-made, and the next command starts afresh.
    assert sorted(path.name for path in tmp_path.iterdir() if "mlflow.db" in path.name) == ["mlflow.db.lock"]
    assert run_limited(tmp_path, None, *train).returncode == 0

    # A complete store that reaches the limit while a run is recorded: the same line, and no
    # run left RUNNING.
    third = run_limited(tmp_path, store.stat().st_size, *train)
    assert third.returncode == 2 and "Traceback" not in third.stderr, third.stderr
    (line,) = third.stderr.strip().splitlines()
    assert f"MLflow store {store} cannot grow" in line and "ulimit -f" in line, line
    with sqlite3.connect(store) as database:
        assert database.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone() == (0,)


def test_a_half_created_store_is_named_for_what_it_is(tmp_path):
    """A store whose creation stopped halfway in a client outside reprolab (here MLflow's own,
    under a file-size limit)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create = f"from mlflow.tracking import MlflowClient; MlflowClient({uri!r}).search_experiments()"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300 * 1024, 300 * 1024))  # noqa: E731
    stopped = subprocess.run(
        [sys.executable, "-c", create], env=clean_env(), preexec_fn=limit, capture_output=True, timeout=300
    )
    assert stopped.returncode != 0 and (tmp_path / "mlflow.db").exists()
    done = run_limited(tmp_path, None, "train", "--no-progress", *quick_overrides(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "was left half-created" in line and "holds 0 runs" in line and "move it aside" in line, line
