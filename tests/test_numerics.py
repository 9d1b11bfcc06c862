"""compute.numerics: the portable mode's numbers owe nothing to the CPU's own kernels, the native mode's
follow them. A lesser CPU is stood in for on this one by the variables that cap the kernels torch, MKL,
oneDNN and glibc pick (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA, GLIBC_TUNABLES);
MKL on another vendor (whose products differed from an Intel Xeon's) by MKL's other branches (MKL_CBWR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF_DIR, REPROLAB, clean_env
from reprolab import numerics
from reprolab.entrypoint import UserError


def test_portable_sets_the_kernels_and_a_native_child_gets_the_users_own_back():
    user = {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    portable = numerics.environment_for("portable", user)
    assert {key: portable[key] for key in numerics.PORTABLE_ENV} == numerics.PORTABLE_ENV
    assert portable["MKL_ENABLE_INSTRUCTIONS"] == "AVX2" and portable[numerics.MODE_VARIABLE] == "portable"
    native = numerics.environment_for("native", portable)  # a child of the portable process
    assert native["ATEN_CPU_CAPABILITY"] == "avx2" and native["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert "MKL_CBWR" not in native and "ONEDNN_MAX_CPU_ISA" not in native and native["PATH"] == "/bin"
    # A stand-in the user sets in a child's environment is theirs, not the portable mode's.
    assert (
        numerics.environment_for("native", {**portable, "ATEN_CPU_CAPABILITY": "avx512"})["ATEN_CPU_CAPABILITY"]
        == "avx512"
    )
    with pytest.raises(ValueError, match=r"compute\.numerics"):
        numerics.environment_for("fast", user)


def test_a_process_whose_torch_runs_other_kernels_refuses_the_mode(monkeypatch):
    """This process's torch started portable (conftest): native kernels cannot be had in it."""
    import torch

    monkeypatch.setattr(os, "environ", dict(os.environ))
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    numerics.apply("portable")
    with pytest.raises(UserError, match=r"compute.numerics=native: this process runs other kernels"):
        numerics.apply("native")


def test_a_portable_run_key_holds_no_cpu_and_its_pipeline_output_names_the_vendor(tmp_path, monkeypatch):
    """A portable run is reused on any machine of its architecture; its pipeline output names the
    vendor that made it, and `make pipeline` names a vendor change where numbers differ."""
    import runpy

    monkeypatch.setattr(os, "environ", dict(os.environ))
    numerics.apply("portable")
    vendor = numerics.cpu_vendor()
    assert numerics.key() == {"mode": "portable", "machine": os.uname().machine}
    assert numerics.brief({"cpu_vendor": vendor, "mode": "portable"})["cpu_vendor"] == vendor
    causes = runpy.run_path(str(Path(__file__).parents[1] / "scripts/against_committed.py"))["causes"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/baseline").mkdir(parents=True)
    train = {"numerics": {"mode": "portable", "cpu_vendor": "GenuineIntel", "cpu_capability": "DEFAULT"}}
    (tmp_path / "results/baseline/train.json").write_text(json.dumps(train))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, timeout=60)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True, timeout=60)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], cwd=tmp_path, check=True, timeout=60
    )
    train["numerics"]["cpu_vendor"] = "AuthenticAMD"
    (tmp_path / "results/baseline/train.json").write_text(json.dumps(train))
    said = causes()
    assert "committed portable on GenuineIntel" in said[0] and "now portable on AuthenticAMD" in said[0], said
    assert "checked on one vendor's CPUs only" in said[1]


def test_make_pipeline_names_the_code_and_parameters_that_made_the_committed_outputs_otherwise(tmp_path, monkeypatch):
    """Where the committed dvc.lock recorded other code or parameters than the one a repro just
    wrote, the cause names them (a stage's output that another stage reads is not code)."""
    import runpy

    import yaml

    causes = runpy.run_path(str(Path(__file__).parents[1] / "scripts/against_committed.py"))["causes"]
    monkeypatch.chdir(tmp_path)
    stage = {
        "deps": [{"path": "src/a.py", "md5": "1"}, {"path": "results/x.json", "md5": "2"}],
        "params": {"params.yaml": {"audit.seeds": [0, 1]}},
        "outs": [{"path": "results/y.json", "md5": "3"}],
    }
    writer = {"deps": [], "outs": [{"path": "results/x.json", "md5": "2"}]}
    lock = {"schema": "2.0", "stages": {"train": stage, "prepare": writer}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, timeout=60)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True, timeout=60)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], cwd=tmp_path, check=True, timeout=60
    )
    assert causes() == []
    stage["deps"] = [{"path": "src/a.py", "md5": "4"}, {"path": "results/x.json", "md5": "5"}]
    writer["outs"] = [{"path": "results/x.json", "md5": "5"}]
    stage["params"]["params.yaml"]["audit.seeds"] = [0, 1, 2]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    said = [cause for cause in causes() if "dvc.lock:" in cause]
    assert said == [
        "the committed outputs were made by other code or data than these (dvc.lock: src/a.py)",
        "the committed outputs were made with other parameters (dvc.lock: audit.seeds new or changed)",
    ], said


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "").split())


def _train(tmp_path: Path, mode: str, stand_in: dict[str, str]) -> dict:
    """A baseline run (its training amplifies rounding) in a fresh process, as a user's command runs."""
    overrides = [
        "train",
        "--no-progress",
        "experiment=baseline",
        "data=synthetic_small",
        f"data.prepared_path={tmp_path / 'small.npz'}",
        "experiments.baseline.train.max_epochs=30",
        "tracking=none",
        f"compute.numerics={mode}",
    ]
    done = subprocess.run(
        [*REPROLAB, *overrides], cwd=tmp_path, env=clean_env(**stand_in), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout[done.stdout.index("{") :])


# A run trained by reprolab.training in a fresh process whose environment alone sets its kernels (no
# `numerics.apply`, which would set MKL's branch): what MKL computes differently elsewhere, it computes here.
_TRAIN_AS_SET = """
import json, sys
from reprolab import data, numerics
from reprolab.config import load_config
from reprolab.training import run_one
config = load_config(sys.argv[2:], sys.argv[1])
_, result = run_one(config, "baseline", 0, data.dataset_for(config.data), progress=False)
print(json.dumps({"weights": result.weights_sha256, "mkl_branch": numerics.in_effect()["mkl_branch"]}))
"""


def _train_as_set(tmp_path: Path, mode: str, mkl_branch: str) -> dict:
    env = {**numerics.PORTABLE_ENV, "MKL_CBWR": mkl_branch, numerics.MODE_VARIABLE: mode}
    overrides = ["data=synthetic_small", f"data.prepared_path={tmp_path / 'small.npz'}"]
    overrides += ["experiments.baseline.train.max_epochs=30", "tracking=none"]
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_AS_SET, str(CONF_DIR), *overrides],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_native_numbers_follow_the_cpu_and_portable_ones_do_not(tmp_path):
    if not {"avx2", "fma"} <= _cpu_flags():
        pytest.skip("stands in for a lesser CPU: needs one with AVX2 to stand in from")
    lesser_cpu = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    native = _train(tmp_path, "native", {})
    native_lesser = _train(tmp_path, "native", lesser_cpu)
    assert native["numerics"] == "native"
    assert native["weights_sha256"] != native_lesser["weights_sha256"], "the stand-in changed no kernel"
    portable = _train(tmp_path, "portable", {})
    assert portable["numerics"] == "portable"
    no_fma_libm = {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"}
    for stand_in in (lesser_cpu, {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, no_fma_libm):
        assert _train(tmp_path, "portable", stand_in)["weights_sha256"] == portable["weights_sha256"], stand_in
    # MKL's branches compute other bits (natively they move the run), and none moves a portable run.
    # (MKL may run another branch than the one asked for, AUTO for AVX2 on AMD: each run says which.)
    branches = ["COMPATIBLE", "AVX2"] + (["AVX512"] if "avx512f" in _cpu_flags() else [])
    natively = [_train_as_set(tmp_path, "native", branch) for branch in branches]
    assert len({run["weights"] for run in natively}) > 1, "MKL's branches computed the same bits: nothing stood in"
    portably = [_train_as_set(tmp_path, "portable", branch) for branch in branches]
    assert [run["mkl_branch"] for run in portably] == [run["mkl_branch"] for run in natively]
    assert {run["weights"] for run in portably} == {portable["weights_sha256"]}
