"""The rules every configuration key follows: a `ConfigError` names the full key, numbers lie in
their field's `Range` (`check_ranges`), choices and seeds are checked one way."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Optional

from reprolab.entrypoint import UserError

SEED_MAX = 2**32 - 1  # numpy's legacy seeding accepts 0 .. 2**32 - 1


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class Range:
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def text(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def ranged(
    low: Optional[float] = None, high: Optional[float] = None, *, low_open: bool = False, high_open: bool = False
) -> dict[str, Range]:
    """Field metadata: the field's values (each element of a list) must lie in this range."""
    return {"range": Range(low, high, low_open, high_open)}


SEED = ranged(0, SEED_MAX)


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def require_choice(value: str, choices: Sequence[str], key: str, what: str) -> None:
    require(value in choices, key, f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def check_seeds(seeds: Sequence[int], key: str) -> None:
    """At least two distinct seeds (an interval needs them), each in the seed range."""
    require(len(seeds) >= 2, key, f"needs at least 2 seeds for an interval, got {list(seeds)}")
    require(len(set(seeds)) == len(seeds), key, f"has repeated seeds: {list(seeds)}")
    for seed in seeds:
        require(0 <= seed <= SEED_MAX, key, f"seeds must be in [0, {SEED_MAX}], got {seed}")


def check_ranges(node: Any, key: str = "") -> None:
    """Every number finite, every ranged field within its range, recursively."""
    if is_dataclass(node):
        for item in fields(node):
            value = getattr(node, item.name)
            sub = f"{key}.{item.name}" if key else item.name
            bounds = item.metadata.get("range")
            for number in value if isinstance(value, list) else [value]:
                if isinstance(number, float) and not math.isfinite(number):
                    raise ConfigError(f"{sub}: must be a finite number, got {number}")
                if (
                    bounds
                    and isinstance(number, (int, float))
                    and not isinstance(number, bool)
                    and not bounds.contains(number)
                ):
                    raise ConfigError(f"{sub}: must be in {bounds.text()}, got {number}")
            check_ranges(value, sub)
    elif isinstance(node, dict):
        for name, value in node.items():
            check_ranges(value, f"{key}.{name}")
