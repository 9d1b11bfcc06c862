"""The layout's promises: dvc.yaml lists the code each stage runs, stages that neither train nor
track import neither torch nor MLflow, and conf/ is the only source of values."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, clean_env
from reprolab.config import schema
from reprolab.sources import closure

STAGES_DIR = REPO_ROOT / "src/reprolab/stages"


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    found = re.match(r"python -m (reprolab\.stages\.\w+)", stage["cmd"])
    assert found, f"{stage['cmd']!r} does not run a stage module"
    return found.group(1)


def test_each_stage_runs_its_own_module():
    modules = {stage_module(stage) for stage in stages().values()}
    files = {f"reprolab.stages.{path.stem}" for path in STAGES_DIR.glob("*.py") if path.stem != "__init__"}
    assert modules == files
    assert all(stage_module(stage).endswith(name) for name, stage in stages().items())


@pytest.mark.parametrize("name", list(stages()))
def test_dvc_yaml_lists_the_code_each_stage_runs(name):
    stage = stages()[name]
    listed = {dep for dep in stage["deps"] if dep.startswith("src/")}
    runs = {str(path.relative_to(REPO_ROOT)) for path in closure(stage_module(stage))}
    assert listed == runs, f"{name}: missing {sorted(runs - listed)}, not run {sorted(listed - runs)}"


def test_closure_follows_imports_inside_functions_and_skips_type_checking_ones():
    def names(module: str) -> set[str]:
        return {path.relative_to(STAGES_DIR.parent).as_posix() for path in closure(module)}

    train = names("reprolab.stages.train")
    assert {"tracking/training_run.py", "training.py", "models.py"} <= train  # imported inside main()
    evaluate = names("reprolab.stages.evaluate")
    assert not {"training.py", "models.py", "tracking/store.py", "results.py"} & evaluate


def _schema_classes() -> list[type]:
    return [
        value
        for value in vars(schema).values()
        if dataclasses.is_dataclass(value) and value.__module__ == schema.__name__ and value is not schema.RunConfig
    ]


@pytest.mark.parametrize("cls", _schema_classes(), ids=lambda cls: cls.__name__)
def test_the_schema_holds_no_values(cls):
    """conf/ is the only source of defaults: no schema field has one."""
    with_defaults = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert not with_defaults


BLOCK = (
    "import sys; [sys.modules.__setitem__(name, None) for name in ('torch', 'mlflow')]; import runpy; "
    "sys.argv = ['stage', *sys.argv[1:]]; runpy.run_module('reprolab.stages.{}', run_name='__main__')"
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def run_blocked(workdir: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    """The stage as DVC runs it, with torch and MLflow made unimportable."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(stage), *args],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stages_that_neither_train_nor_track_run_without_torch_and_mlflow(workdir):
    for stage in ("check_params", "prepare"):
        done = run_blocked(workdir, stage)
        assert done.returncode == 0, done.stderr
    metrics = {
        "train_accuracy": 0.9,
        "val_accuracy": 0.86,
        "test_accuracy": 0.85,
        "train_loss": 0.3,
        "val_loss": 0.4,
        "test_loss": 0.4,
    }
    (workdir / "results/gru").mkdir(parents=True)
    fit = {
        "preset": "gru",
        "seed": 0,
        "mlflow_run_id": None,
        "dataset_digest": "0" * 64,
        "metrics": metrics,
        "best_epoch": 3,
        "epochs_run": 5,
    }
    (workdir / "results/gru/train.json").write_text(json.dumps(fit))
    done = run_blocked(workdir, "evaluate", "gru")
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "results/gru/metrics.json").read_text())["target_met"] is True


def test_a_stage_refuses_bad_input_with_one_line_and_exit_2(workdir):
    done = run_blocked(workdir, "evaluate", "gru")  # nothing trained yet
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "results/gru/train.json not found" in done.stderr
    assert "dvc repro --force train@gru" in done.stderr


def test_dvc_plots_use_the_current_template_and_one_orientation():
    """The per-epoch template's colours and presets are the project's (scripts/plots_templates.py),
    the page renders offline, and confusion matrices put the actual class on y everywhere."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/plots_templates.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    page = (REPO_ROOT / ".dvc/plots/offline.html").read_text()
    assert "{plot_divs}" in page and "<script src=" not in page and "cdn.jsdelivr" not in page
    plots = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]
    confusions = [next(iter(p.values())) for p in plots if isinstance(p, dict) and "predictions" in next(iter(p))]
    assert confusions and all((c["x"], c["y"]) == ("predicted", "actual") for c in confusions)
    assert "plots/offline.html" in (REPO_ROOT / ".dvc/config").read_text()


def test_no_module_is_over_400_lines():
    package = STAGES_DIR.parent
    long = {
        str(p.relative_to(package)): n for p in package.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"split these modules by capability: {long}"


def test_every_folder_of_the_package_says_what_goes_in_and_out():
    for init in STAGES_DIR.parent.rglob("__init__.py"):
        text = init.read_text()
        assert text.startswith('"""'), f"{init} has no docstring"


def test_the_architecture_doc_draws_the_codes_imports():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/import_graph.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
