"""Where a run ran (`environment.json`): Python, the platform, the processor, the kernels
that computed it and every installed distribution; and how two such records differ.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
from typing import Any, Optional

from reprolab import numerics
from reprolab.numerics import cpu_model

SCHEMA = 1  # of environment.json: a newer one is refused, not misread


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, str]:
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(found.items()))


def environment(device: str = "", kernels: Optional[dict] = None) -> dict:
    """Where a run ran: Python, the platform, the processor, the device, the kernels that
    computed it (`numerics.in_effect`, from the process that trained) and every distribution."""
    return {
        "schema": SCHEMA,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "byteorder": sys.byteorder,
        "device": device,
        "numerics": kernels if kernels is not None else numerics.in_effect(),
        "distributions": _distributions(),
    }


def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def difference_groups(recorded: dict, current: dict) -> dict[str, list[str]]:
    """How `current` differs from `recorded`, as `what: old -> new`, in three groups: the
    kernels (`numerics`), the libraries, the rest of the machine."""
    old_kernels, new_kernels = (_flat(env.get("numerics") or {}, "numerics.") for env in (recorded, current))
    kernels = [
        f"{key}: {old_kernels.get(key, '-')} -> {new_kernels.get(key, '-')}"
        for key in sorted(set(old_kernels) | set(new_kernels))
        if old_kernels.get(key) != new_kernels.get(key)
    ]
    if "numerics" not in recorded:
        kernels = ["numerics: not recorded (a run of an older reprolab: native kernels, of a CPU it names below)"]
    libraries = []
    old, new = recorded.get("distributions", {}), current.get("distributions", {})
    for name in sorted(set(old) | set(new)):
        if name != "reprolab" and old.get(name) != new.get(name):
            libraries.append(f"{name}: {old.get(name, 'absent')} -> {new.get(name, 'absent')}")
    machine = [
        f"{key}: {recorded.get(key) or '-'} -> {current.get(key) or '-'}"
        for key in sorted(set(recorded) | set(current))
        if key not in ("schema", "distributions", "numerics") and recorded.get(key) != current.get(key)
    ]
    return {"kernels": kernels, "libraries": libraries, "machine": machine}


def environment_differences(recorded: dict, current: dict) -> list[str]:
    """Every difference of `difference_groups`: the kernels first (the usual reason bits
    differ), then the libraries, then the rest of the machine."""
    return [line for group in difference_groups(recorded, current).values() for line in group]


def read_environment(text: str) -> dict:
    """An `environment.json` read back; one of a newer schema is refused (ValueError), not misread."""
    values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError("it is not a JSON object")
    if values.get("schema", 0) > SCHEMA:
        raise ValueError(f"its schema is {values['schema']}; this reprolab reads up to {SCHEMA}")
    return values
