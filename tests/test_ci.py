"""CI's rule: with REPROLAB_NO_SKIP=1 (set by .ci/run) a skipped test fails the run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def run_pytest(tmp_path, no_skip: bool) -> subprocess.CompletedProcess:
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\ndef test_needs_a_service():\n    pytest.skip('no such service')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests"), "REPROLAB_NO_SKIP": "1" if no_skip else "0"}
    # Load this project's conftest (and its hook) as a plugin for a test file outside tests/.
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_skip_fails_under_reprolab_no_skip(tmp_path):
    assert run_pytest(tmp_path, no_skip=False).returncode == 0
    strict = run_pytest(tmp_path, no_skip=True)
    assert strict.returncode == 1 and "REPROLAB_NO_SKIP=1 forbids skips" in strict.stdout, strict.stdout


def test_the_environment_is_the_lock():
    """`make setup` installs requirements.lock's versions: each one listed is the one installed."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = dict(
        line.split("==", 1) for line in (REPO_ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    assert "torch" not in pinned and len(pinned) > 50
    wrong = {}
    for name, wanted in pinned.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "absent"
        if installed != wanted:
            wrong[name] = (wanted, installed)
    assert not wrong, f"installed versions differ from requirements.lock (run `make setup` again): {wrong}"
