"""Which kernels compute a run's numbers: `compute.numerics`, chosen before torch starts.

- **portable** (the default): the same bits on every x86-64 CPU of one vendor for the same code,
  data, configuration and library versions (an AMD EPYC and an Intel Xeon gave other bits, most
  likely from MKL's matrix products, whose code differs by vendor; docs/reproduce.md). torch's
  ATen kernels at their baseline level
  (`ATEN_CPU_CAPABILITY=default`: no AVX, the level every x86-64 CPU has), MKL's Conditional
  Numerical Reproducibility on its COMPATIBLE branch (`MKL_CBWR=COMPATIBLE,STRICT`: the only
  branch MKL documents as giving the same results on Intel and non-Intel processors; its AVX2
  branch falls back to MKL's own dispatch on AMD), oneDNN off (it picks kernels by instruction
  set and cache sizes), one thread, full float32 matmul precision.
- **native**: the machine's fastest kernels, or whatever the environment's ATEN_CPU_CAPABILITY,
  MKL_CBWR and ONEDNN_MAX_CPU_ISA ask for: numbers that depend on the CPU.

`apply(mode)` sets the environment of this process (and so of every process it starts) before
torch is imported; where torch is already imported it checks that torch runs the mode's kernels
and otherwise stops with one line. `environment_for` is the environment a child in another mode
needs (the user's own settings are kept aside, so a native child gets them back). `in_effect()`
is what torch actually runs, written into every run's environment.json. Standard library only:
nothing here imports torch until asked what it runs.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

PORTABLE, NATIVE = "portable", "native"
MODES = (PORTABLE, NATIVE)
# What the portable mode sets; each read by torch, MKL or oneDNN when they start.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}
# Every variable that chooses kernels (or stands in for a lesser CPU), recorded with each run.
KNOBS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "GLIBC_TUNABLES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)
MODE_VARIABLE = "REPROLAB_NUMERICS"  # the mode this process and its children run in
USER_VARIABLE = "REPROLAB_NUMERICS_USER"  # the user's own KNOBS, kept for native children
# mkl_cbwr_get's branch numbers (mkl_service.h).
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512"}


def mode_of(params: Mapping[str, Any]) -> str:
    """The mode a resolved configuration asks for; runs recorded before the setting existed ran natively."""
    value = (params.get("compute") or {}).get("numerics", NATIVE)
    return getattr(value, "value", value)


def _user_settings(env: Mapping[str, str]) -> dict[str, Optional[str]]:
    """The kernel settings the user gave: what `env` holds, but where it holds the portable
    mode's own value, the user's value that the mode set aside."""
    saved = json.loads(env.get(USER_VARIABLE) or "{}")
    ours = PORTABLE_ENV if env.get(MODE_VARIABLE) == PORTABLE else {}
    return {knob: saved.get(knob) if knob in ours and env.get(knob) == ours[knob] else env.get(knob) for knob in KNOBS}


def environment_for(mode: str, env: Mapping[str, str]) -> dict[str, str]:
    """`env` as a process in `mode` needs it: the user's own kernel settings, then the portable
    mode's over them."""
    if mode not in MODES:
        raise ValueError(f"compute.numerics: {mode!r} is not one of {', '.join(MODES)}")
    user = _user_settings(env)
    out = {key: value for key, value in env.items() if key not in KNOBS}
    out.update({knob: value for knob, value in user.items() if value is not None})
    if mode == PORTABLE:
        out.update(PORTABLE_ENV)
    out[USER_VARIABLE] = json.dumps(user, sort_keys=True)
    out[MODE_VARIABLE] = mode
    return out


def apply(mode: str) -> None:
    """Run this process (and what it starts) in `mode`: see the module's rules."""
    wanted = environment_for(mode, os.environ)
    for key in set(os.environ) - set(wanted):
        del os.environ[key]
    os.environ.update(wanted)
    if "torch" in sys.modules:
        _check_running(mode)


def current_mode() -> str:
    return os.environ.get(MODE_VARIABLE, NATIVE)


def _check_running(mode: str) -> None:
    """Where torch started before `apply`: does it run the kernels `mode` asks for?"""
    running = in_effect()
    if mode == PORTABLE:
        wrong = running["cpu_capability"] != "DEFAULT" or running["mkl_branch"] not in (None, "COMPATIBLE")
    else:
        asked = _user_settings(os.environ)
        wrong = (running["cpu_capability"] == "DEFAULT" and not asked.get("ATEN_CPU_CAPABILITY")) or (
            running["mkl_branch"] == "COMPATIBLE" and not asked.get("MKL_CBWR")
        )
    if wrong:
        from reprolab.entrypoint import UserError  # imported here: the tests' warm interpreter reads this file alone

        raise UserError(
            f"compute.numerics={mode}: torch was started in this process with other kernels (CPU capability "
            f"{running['cpu_capability']}, MKL branch {running['mkl_branch'] or '?'}); run the command in a fresh "
            f"process, with every process of a run in one mode"
        )


def configure_torch(torch: Any) -> None:
    """The settings torch takes at run time (called as each training starts): oneDNN off in the
    portable mode, full float32 matmul precision, no flushing of denormals."""
    torch.backends.mkldnn.enabled = current_mode() != PORTABLE
    torch.set_float32_matmul_precision("highest")
    torch.set_flush_denormal(False)


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, Optional[str]]:
    import torch

    shown = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", shown)
    onednn = re.search(r"MKL-DNN v([\w.\-]+)", shown)
    return {"mkl": mkl.group(1) if mkl else None, "onednn": onednn.group(1) if onednn else None}


def _mkl_branch() -> Optional[str]:
    """The CNR branch MKL runs (None where MKL's service call cannot be reached)."""
    import torch

    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    branch = get(1)  # MKL_CBWR_BRANCH
    return _MKL_BRANCHES.get(branch, str(branch))


def in_effect() -> dict[str, Any]:
    """What computes this process's numbers: the mode, torch's CPU capability, MKL's and
    oneDNN's versions and MKL's branch, threads, precision, and the settings that chose them."""
    import torch

    return {
        "mode": current_mode(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **_library_versions(),
        "mkl_branch": _mkl_branch(),
        "onednn_enabled": bool(torch.backends.mkldnn.enabled),
        "threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cpu_vendor": cpu_vendor(),
        "libc": " ".join(platform.libc_ver()).strip() or None,
        "settings": {knob: os.environ[knob] for knob in KNOBS if os.environ.get(knob)},
    }


BRIEF = ("mode", "cpu_vendor", "cpu_capability", "mkl_branch", "onednn_enabled")


def brief(kernels: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """What of `in_effect` decides the numbers and is the same on every machine of one vendor in
    the portable mode (no versions, no CPU model): what a pipeline output may carry."""
    return {name: (kernels or {}).get(name) for name in BRIEF}


def key() -> dict[str, Any]:
    """What of the numerics a run key holds: portable runs agree across x86-64 machines of one
    vendor; native runs only on the same CPU model with the same settings."""
    if current_mode() == PORTABLE:
        return {"mode": PORTABLE, "machine": platform.machine(), "vendor": cpu_vendor()}
    running = in_effect()
    return {
        "mode": NATIVE,
        "machine": running["machine"],
        "cpu_capability": running["cpu_capability"],
        "mkl_branch": running["mkl_branch"],
        "cpu": cpu_model(),
        "settings": running["settings"],
    }


def _cpuinfo(field: str) -> Optional[str]:
    """A field of the first processor in /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_vendor() -> Optional[str]:
    """The processor's vendor as the CPU names itself (GenuineIntel, AuthenticAMD), else None."""
    return _cpuinfo("vendor_id")


def cpu_model() -> str:
    """The processor's model name, else what the platform says."""
    return _cpuinfo("model name") or platform.processor()
