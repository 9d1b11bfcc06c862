"""compute.numerics: the portable mode gives one machine's numbers on the x86-64 CPUs of its vendor,
the native mode this CPU's own. A lesser CPU is stood in for on this one by the variables that cap the kernels
torch, MKL and oneDNN pick (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPROLAB, clean_env
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
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    numerics.apply("portable")
    with pytest.raises(UserError, match=r"compute.numerics=native: torch was started in this process with other"):
        numerics.apply("native")


def test_a_portable_run_key_and_its_pipeline_output_name_the_cpus_vendor(tmp_path, monkeypatch):
    """Portable bits were seen to differ between an AMD EPYC and an Intel Xeon: a portable run is
    reused on a CPU of its own vendor only, and `make pipeline` names a vendor change as the cause."""
    import runpy

    monkeypatch.setattr(os, "environ", dict(os.environ))
    numerics.apply("portable")
    vendor = numerics.cpu_vendor()
    assert numerics.key() == {"mode": "portable", "machine": os.uname().machine, "vendor": vendor}
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
    assert "not between Intel and AMD" in said[1]


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


@pytest.mark.slow
@pytest.mark.timeout(600)
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
    for stand_in in (lesser_cpu, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}):
        assert _train(tmp_path, "portable", stand_in)["weights_sha256"] == portable["weights_sha256"], stand_in
    # A machine whose own best kernels are the portable level computes, natively, the portable numbers.
    portable_level = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE,STRICT"}
    assert _train(tmp_path, "native", portable_level)["weights_sha256"] == portable["weights_sha256"]
