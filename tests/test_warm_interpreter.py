"""The tests' warm interpreter (zygote.py) runs a command as a fresh interpreter would: the same
output, exit status and files; without its server, the stand-ins run the real interpreter."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import zygote
from conftest import CONF_DIR, clean_env, warm_interpreter


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_a_command_gives_the_same_output_and_status_warm_and_cold(tmp_path):
    server = warm_interpreter()
    if server is None:
        pytest.skip("REPROLAB_TEST_COLD=1 turns the warm interpreter off")
    warm, cold = clean_env(warm=True), clean_env()
    assert zygote.SOCKET_VARIABLE in warm and zygote.SOCKET_VARIABLE not in cold
    server.wait_ready()
    served = server.served()
    results = []
    for argv in (
        ["reprolab", "--config-dir", str(CONF_DIR), "compose", "-o", "-", "seed=7"],
        ["reprolab", "--config-dir", str(CONF_DIR), "compose", "no_such_key=1"],  # refused: exit 2
        ["dvc", "--version"],
        ["dvc", "status"],  # refused: not a DVC repository
        ["python", "-m", "reprolab", "--config-dir", str(CONF_DIR), "compose", "-o", "out.yaml"],  # in cwd
    ):
        written = []
        for env in (cold, warm):
            results.append(run(argv, tmp_path, {**env, "COLUMNS": "50"}))
            written.append((tmp_path / "out.yaml").read_text() if (tmp_path / "out.yaml").exists() else None)
            (tmp_path / "out.yaml").unlink(missing_ok=True)
        assert results[-1] == results[-2] and written[0] == written[1], argv
    assert "seed: 7" in results[0][1] and results[2][0] == 2 and "no_such_key" in results[2][2]
    assert "seed:" in written[0]
    assert results[4][0] == 0 and results[6][0] != 0 and "not inside of a DVC repository" in results[6][2]
    assert server.served() == served + 5  # the warm runs ran warm


def test_without_its_server_the_stand_in_runs_the_real_interpreter(tmp_path):
    env = {**clean_env(warm=True), zygote.SOCKET_VARIABLE: str(tmp_path / "no-such-socket")}
    code, out, _ = run(["python", "-c", "import sys; print(sys.argv[1:])", "x"], tmp_path, env)
    assert (code, out.strip()) == (0, "['x']")
    code, out, _ = run(["reprolab", "--config-dir", str(CONF_DIR), "compose", "-o", "-"], tmp_path, env)
    assert code == 0 and "experiments:" in out
