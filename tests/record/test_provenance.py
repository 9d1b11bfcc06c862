"""What a run records about itself (`reprolab.record`) and how reproduce judges a result
(`reprolab.reproduce.judge.compare`): unit tests on small files and hand-made results."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import tarfile

import reprolab.record.source
from reprolab.record.environment import environment_differences
from reprolab.record.source import capture_source, read_archive
from reprolab.reproduce.judge import DIFFERS, IDENTICAL, WITHIN_TOLERANCE, compare
from reprolab.results import RunResult
from reprolab.tracking.training_run import _package_source


def project(tmp_path, git: bool):
    root = tmp_path / "project"
    (root / "src/reprolab").mkdir(parents=True)
    (root / "src/reprolab/__init__.py").write_text("")
    (root / "src/reprolab/training.py").write_text("LR = 1\n")
    (root / "conf").mkdir()
    (root / "conf/config.yaml").write_text("seed: 0\n")
    (root / "pyproject.toml").write_text("[project]\n")
    if git:
        run = lambda *args: subprocess.run(["git", *args], cwd=root, check=True, timeout=60, capture_output=True)  # noqa: E731
        run("init", "-q")
        (root / ".gitignore").write_text("*.log\n__pycache__/\n")
        run("add", "-A")
        run("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "start")
    return root


def capture(root, monkeypatch):
    monkeypatch.setattr(reprolab.record.source, "PACKAGE_DIR", (root / "src/reprolab").resolve())
    capture_source.cache_clear()
    return capture_source(root)


def test_the_archive_is_the_source_on_disk_and_its_bytes_depend_on_the_files_only(tmp_path, monkeypatch):
    root = project(tmp_path, git=False)
    first = capture(root, monkeypatch)
    second = capture(root, monkeypatch)
    assert first.archive == second.archive and first.digest == second.digest
    assert set(first.files) == {
        "src/reprolab/__init__.py",
        "src/reprolab/training.py",
        "conf/config.yaml",
        "pyproject.toml",
    }
    assert first.head is None and first.dirty is None
    # Unpacked, it is the same files; a file altered afterwards is named.
    archive = tmp_path / "source.tar.gz"
    archive.write_bytes(first.archive)
    manifest = read_archive(archive, tmp_path / "out")
    assert manifest["altered"] == [] and manifest["digest_now"] == first.digest
    assert (tmp_path / "out/src/reprolab/training.py").read_text() == "LR = 1\n"
    (tmp_path / "again").mkdir()
    (root / "src/reprolab/training.py").write_text("LR = 2\n")
    changed = capture(root, monkeypatch)
    assert changed.digest != first.digest


def test_dirty_means_the_source_differs_from_head_staged_unstaged_or_new(tmp_path, monkeypatch):
    root = project(tmp_path, git=True)
    clean = capture(root, monkeypatch)
    assert clean.dirty is False and clean.commit == clean.head
    (root / "notes.txt").write_text("an output that changed\n")  # not source: still clean
    (root / "run.log").write_text("ignored\n")
    assert capture(root, monkeypatch).dirty is False
    (root / "src/reprolab/new.py").write_text("X = 1\n")
    dirty = capture(root, monkeypatch)
    assert dirty.dirty is True and dirty.commit != dirty.head
    shown = subprocess.run(
        ["git", "diff", "--name-only", dirty.head, dirty.commit], cwd=root, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert shown == ["src/reprolab/new.py"]
    # The user's index was not touched: the new file is still untracked.
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=60)
    assert "?? src/reprolab/new.py" in status.stdout


def test_files_that_look_like_secrets_are_never_captured(tmp_path, monkeypatch, capsys):
    """Made-up secrets inside a temporary project: named once on stderr, never in the archive,
    its manifest or the dirty run's commit, and their content never printed."""
    root = project(tmp_path, git=True)
    made_up = "NOT-A-REAL-SECRET-0123456789"
    secrets = {
        "src/reprolab/.env": f"TOKEN={made_up}\n",
        "src/reprolab/.env.local": f"TOKEN={made_up}\n",
        "conf/id_rsa": f"{made_up}\n",
        "conf/credentials.json": f'{{"token": "{made_up}"}}\n',
        "conf/deploy.yaml": f"key: |\n  -----BEGIN OPENSSH PRIVATE KEY-----\n  {made_up}\n",
    }
    for name, text in secrets.items():
        (root / name).write_text(text)
    (root / "src/reprolab/keys.py").write_text("KEY_NAMES = ('a', 'b')\n")  # code, not a secret
    source = capture(root, monkeypatch)
    with tarfile.open(fileobj=io.BytesIO(source.archive), mode="r:gz") as tar:
        members = tar.getnames()
        manifest = tar.extractfile("reprolab-source.json").read().decode()
    assert not set(secrets) & set(members) and "src/reprolab/keys.py" in members
    assert made_up not in manifest and not set(secrets) & set(source.files)
    assert source.dirty and source.commit
    tree = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", source.commit], cwd=root, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert "src/reprolab/keys.py" in tree and not set(secrets) & set(tree)
    warned = capsys.readouterr().err
    assert all(name in warned for name in secrets) and made_up not in warned
    assert warned.count("looks like a secret") == len(secrets)


def test_environment_differences_name_each_change_the_kernels_first():
    kernels = {"mode": "native", "cpu_capability": "AVX512", "settings": {}}
    old = {
        "python": "3.11.7",
        "cpu": "A",
        "numerics": kernels,
        "distributions": {"torch": "2.13.0", "numpy": "2.4.6", "gone": "1"},
    }
    new = {
        "python": "3.11.7",
        "cpu": "B",
        "numerics": {**kernels, "cpu_capability": "DEFAULT", "settings": {"ATEN_CPU_CAPABILITY": "default"}},
        "distributions": {"torch": "2.14.1", "numpy": "2.4.6", "added": "2"},
    }
    assert environment_differences(old, new) == [
        "numerics.cpu_capability: AVX512 -> DEFAULT",
        "numerics.settings.ATEN_CPU_CAPABILITY: - -> default",
        "added: absent -> 2",
        "gone: 1 -> absent",
        "torch: 2.13.0 -> 2.14.1",
        "cpu: A -> B",
    ]
    older = {key: value for key, value in old.items() if key != "numerics"}
    assert environment_differences(older, new)[0].startswith("numerics: not recorded")


def result(**changes) -> RunResult:
    history = [
        {
            "epoch": 1,
            "train_loss": 0.7,
            "train_accuracy": 0.5,
            "train_eval_accuracy": 0.5,
            "val_loss": 0.69,
            "val_accuracy": 0.5,
        },
        {
            "epoch": 2,
            "train_loss": 0.6,
            "train_accuracy": 0.6,
            "train_eval_accuracy": 0.6,
            "val_loss": 0.65,
            "val_accuracy": 0.55,
        },
    ]
    base = RunResult(
        "p",
        0,
        {"val_accuracy": 0.55},
        {"best_epoch": 2, "epochs_run": 2, "stopped_early": False},
        history,
        "d",
        {"val": [0, 1]},
        [],
        "w" * 64,
    )
    return dataclasses.replace(base, **changes)


def test_compare_names_the_first_epoch_and_metric_where_runs_part():
    assert compare(result(), result()) == (IDENTICAL, [])
    history = [dict(row) for row in result().history]
    history[1]["val_loss"] = 0.65001
    verdict, differences = compare(result(), result(history=history, metrics={"val_accuracy": 0.55001}))
    assert verdict == DIFFERS and differences[0] == "epoch 2, val_loss: 0.65 recorded, 0.65001 now"
    assert compare(result(), result(history=history), tolerance=1e-4)[0] == WITHIN_TOLERANCE
    verdict, differences = compare(result(), result(weights_sha256="v" * 64))
    assert verdict == DIFFERS and differences[0].startswith("weights")


def test_a_model_ships_the_package_source_only(tmp_path, monkeypatch):
    import reprolab.sources

    package = tmp_path / "pkg"
    (package / "stages").mkdir(parents=True)
    (package / "models.py").write_text("")
    (package / "stages/__init__.py").write_text("")
    (package / ".env.local").write_text("AWS_SECRET_ACCESS_KEY=x\n")
    (package / "notes.txt").write_text("")
    monkeypatch.setattr(reprolab.sources, "PACKAGE_DIR", package)
    shipped = _package_source(tmp_path / "out")
    assert sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()) == [
        "models.py",
        "stages/__init__.py",
    ]


def test_recorded_files_of_a_newer_schema_are_refused_not_misread():
    import json

    import pytest

    from reprolab.record.environment import environment, read_environment

    result = RunResult("baseline", 0, {"val_accuracy": 0.5}, {}, [], "0" * 64)
    assert RunResult.from_json(result.to_json()) == result
    older = json.loads(result.to_json())
    del older["schema"], older["weights_sha256"]
    assert RunResult.from_json(json.dumps(older)).weights_sha256 == ""  # an older reprolab's result reads
    for changed, refused in (({"schema": 2}, "schema is 2"), ({"extra": 1}, "does not know \\(extra\\)")):
        with pytest.raises(ValueError, match=refused):
            RunResult.from_json(json.dumps({**json.loads(result.to_json()), **changed}))
    recorded = environment()
    assert read_environment(json.dumps(recorded)) == json.loads(json.dumps(recorded))
    with pytest.raises(ValueError, match="schema is 2"):
        read_environment(json.dumps({**recorded, "schema": 2}))
