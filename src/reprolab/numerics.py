"""Which kernels compute a run's numbers: `compute.numerics`, chosen before torch starts.

- **portable** (the default): the same bits on every x86-64-v3 CPU (AVX2 and FMA: every AMD
  EPYC, every Intel Xeon since 2013) for the same code, data, configuration and library versions.
  MKL computes nothing of a portable run: its products and its tanh, exp, log and sqrt gave other
  bits on an AMD EPYC than on an Intel Xeon on the branch MKL documents as the same on both, so
  `reprolab.kernels` computes the model with SciPy's OpenBLAS pinned to one kernel set
  (`OPENBLAS_CORETYPE=Haswell`, one thread) and torch's own code at one level
  (`ATEN_CPU_CAPABILITY=avx2`: the same instructions, exact IEEE arithmetic, on every such CPU),
  and training takes the fused Adam (torch's own square root). MKL's CNR branch
  (`MKL_CBWR=COMPATIBLE,STRICT`) stays set for runs recorded before, whose code sent its products
  to MKL; oneDNN off, one torch thread, full float32 matmul precision.
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
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
}
# What OpenBLAS's Haswell kernels and glibc's FMA functions need of an x86-64 CPU.
PORTABLE_CPU_FLAGS = ("avx2", "fma")
# Every variable that chooses kernels (or stands in for a lesser CPU), recorded with each run.
KNOBS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "GLIBC_TUNABLES",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
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


def _x86() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def apply(mode: str) -> None:
    """Run this process (and what it starts) in `mode`: see the module's rules."""
    if mode == PORTABLE:
        _check_cpu()
    wanted = environment_for(mode, os.environ)
    for key in set(os.environ) - set(wanted):
        del os.environ[key]
    os.environ.update(wanted)
    if "torch" in sys.modules:
        _check_running(mode)


def current_mode() -> str:
    return os.environ.get(MODE_VARIABLE, NATIVE)


def _check_cpu() -> None:
    """The portable kernels run on an x86-64 CPU only where it has AVX2 and FMA."""
    flags = _cpuinfo("flags") if _x86() else None
    lacking = [flag for flag in PORTABLE_CPU_FLAGS if flag not in (flags or "").split()]
    if flags is not None and lacking:
        from reprolab.entrypoint import UserError  # imported here: the tests' warm interpreter reads this file alone

        raise UserError(
            f"compute.numerics=portable: this CPU lacks {', '.join(lacking)}, which the portable kernels need "
            f"(x86-64-v3); run with compute.numerics=native (numbers of this CPU only)"
        )


def _check_running(mode: str) -> None:
    """Where torch or SciPy's BLAS started before `apply`: does this process run the kernels `mode` asks
    for? (A portable run's numbers owe nothing to MKL, whatever its branch: `reprolab.kernels`.)"""
    running = in_effect()
    if mode == PORTABLE:
        # (x86-64 only: elsewhere the mode is that architecture's own, docs/reproduce.md)
        pinned = PORTABLE_ENV["OPENBLAS_CORETYPE"] if "scipy.linalg.blas" in sys.modules else None
        wrong = _x86() and (running["cpu_capability"] != "AVX2" or running["openblas_coretype"] != pinned)
    else:  # (on a CPU whose best is AVX2, torch's kernels are the portable ones: MKL's branch tells)
        wrong = running["mkl_branch"] == "COMPATIBLE" and not _user_settings(os.environ).get("MKL_CBWR")
    if wrong:
        from reprolab.entrypoint import UserError  # imported here: the tests' warm interpreter reads this file alone

        raise UserError(
            f"compute.numerics={mode}: this process runs other kernels (torch's CPU capability "
            f"{running['cpu_capability']}, MKL branch {running['mkl_branch'] or '?'}, OpenBLAS kernels "
            f"{running['openblas_coretype'] or 'none found'}); run the command in a fresh process, with every "
            f"process of a run in one mode"
        )


def configure_torch(torch: Any) -> None:
    """The settings torch takes at run time (called as each training starts): oneDNN off in the
    portable mode, full float32 matmul precision, no flushing of denormals; a portable run
    stops here where this process's torch or OpenBLAS runs other kernels."""
    torch.backends.mkldnn.enabled = current_mode() != PORTABLE
    torch.set_float32_matmul_precision("highest")
    torch.set_flush_denormal(False)
    if current_mode() == PORTABLE:
        import scipy.linalg.blas  # noqa: F401  (its OpenBLAS loads now, in the kernels this mode set)

        _check_running(PORTABLE)
        if _x86():  # OpenBLAS splits products by its thread count: one, as torch's
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, Optional[str]]:
    import torch

    shown = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", shown)
    onednn = re.search(r"MKL-DNN v([\w.\-]+)", shown)
    return {"mkl": mkl.group(1) if mkl else None, "onednn": onednn.group(1) if onednn else None}


def _openblas() -> dict[str, Any]:
    """The version, kernel set and threads of the OpenBLAS that SciPy's BLAS (`reprolab.kernels`)
    runs, where SciPy has loaded it (threadpoolctl reads them from the loaded library)."""
    if "scipy.linalg.blas" not in sys.modules:
        return {"openblas": None, "openblas_coretype": None, "openblas_threads": None}
    from threadpoolctl import threadpool_info

    libraries = [lib for lib in threadpool_info() if lib.get("internal_api") == "openblas"]
    found: dict[str, Any] = next((lib for lib in libraries if "numpy" not in lib["filepath"]), {})
    return {
        "openblas": found.get("version"),
        "openblas_coretype": found.get("architecture"),
        "openblas_threads": found.get("num_threads"),
    }


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
        **_openblas(),
        "onednn_enabled": bool(torch.backends.mkldnn.enabled),
        "threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cpu_vendor": cpu_vendor(),
        "libc": " ".join(platform.libc_ver()).strip() or None,
        "settings": {knob: os.environ[knob] for knob in KNOBS if os.environ.get(knob)},
    }


BRIEF = ("mode", "cpu_vendor", "cpu_capability", "mkl_branch", "openblas_coretype", "onednn_enabled")


def brief(kernels: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """What of `in_effect` decides the numbers, and the CPU's vendor (no versions, no CPU model): what
    a pipeline output may carry, the same on every x86-64-v3 machine of one vendor."""
    return {name: (kernels or {}).get(name) for name in BRIEF}


def key() -> dict[str, Any]:
    """What of the numerics a run key holds: portable runs agree across the machines of one
    architecture (x86-64-v3 CPUs of any vendor); native runs only on the same CPU model with the
    same settings."""
    if current_mode() == PORTABLE:
        return {"mode": PORTABLE, "machine": platform.machine()}
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
