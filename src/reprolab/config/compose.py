"""Composing `conf/` with Hydra into a `Config`, and reading `params.yaml` back: OmegaConf
rejects unknown keys, wrong types and unknown choices when the composed config is merged onto
the schema; every failure becomes one `ConfigError` line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reprolab.config.rules import ConfigError
from reprolab.config.schema import Config
from reprolab.entrypoint import one_line

CONFIG_NAME = "config"


def find_conf_dir(conf_dir: Optional[Path | str] = None) -> Path:
    """The Hydra config directory: `conf_dir`, else `./conf`."""
    path = Path(conf_dir) if conf_dir is not None else Path.cwd() / "conf"
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise ConfigError(f"config: no {CONFIG_NAME}.yaml in {path}; run from the repository root or pass --config-dir")
    return path.resolve()


def compose_raw(overrides: Sequence[str] = (), conf_dir: Optional[Path | str] = None) -> dict[str, Any]:
    """Compose `conf/config.yaml` with Hydra override strings into a plain, resolved dict."""
    from hydra import compose, initialize_config_dir  # only composing needs Hydra
    from hydra.errors import HydraException

    path = find_conf_dir(conf_dir)
    try:
        with initialize_config_dir(config_dir=str(path), version_base=None):
            composed = compose(config_name=CONFIG_NAME, overrides=list(overrides))
        raw = OmegaConf.to_container(composed, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_composition_message(error)) from error
    assert isinstance(raw, dict)
    return cast(dict[str, Any], raw)


def validate(raw: dict[str, Any] | DictConfig) -> Config:
    """Check a composed config against the schema and ranges; return the typed `Config`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = _schema_message(error)
        raise ConfigError(f"{key}: {message}" if key else f"config: {message}") from error
    assert isinstance(config, Config)
    config.check()
    return config


def load_config(overrides: Sequence[str] = (), conf_dir: Optional[Path | str] = None) -> Config:
    """Compose `conf/` with overrides and validate it."""
    return validate(compose_raw(overrides, conf_dir))


def read_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """The raw mapping in a resolved params file, with clear errors for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: {path} not found; write it with `reprolab compose`")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"params: {path} is not valid YAML ({one_line(error)}); rewrite it with `reprolab compose`"
        ) from error
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {path} does not hold a mapping; rewrite it with `reprolab compose`")
    return raw


def load_params(path: Path | str = "params.yaml") -> Config:
    """Read and validate a resolved params file (what DVC stages consume)."""
    return validate_params(read_params(path), path)


def validate_params(raw: dict[str, Any], path: Path | str) -> Config:
    """`validate` for a params file: its errors name the file and how to write it again."""
    try:
        return validate(raw)
    except ConfigError as error:
        raise ConfigError(
            f"params: {path}: {error}; if you did not write that value, rewrite the file with `reprolab compose`"
        ) from error


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, nested dict of a typed config (choices as their names), for YAML and tracking.

    The same dict as `OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)`
    (tests/config/test_config.py compares them), walked here directly: OmegaConf took 60 ms a call,
    and every run calls it several times (its params, its run key)."""
    plain = _plain(config)
    assert isinstance(plain, dict)
    return plain


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every dotted key whose value differs, in `new`'s order
    then keys only in `old`; a missing key has the value None."""
    before, after = flatten(old), flatten(new)
    keys = list(after) + [key for key in before if key not in after]
    return [(key, before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)]


def _schema_message(error: OmegaConfBaseException) -> str:
    text = one_line(getattr(error, "msg", None) or error)
    if type(error).__name__ == "MissingMandatoryValue":
        return "missing: conf/ must set it (see the other files in its folder for examples)"
    if type(error).__name__ == "ConfigKeyError":
        return f"{text} (`reprolab compose -o -` prints every key)"
    return text


def _composition_message(error: Exception) -> str:
    """One line from Hydra's multi-line composition errors, keeping the useful part."""
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: no such key (`reprolab compose -o -` prints every key)"
    lines = [line.strip().rstrip(".:") for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Config search path", "provider="))]
    text = "; ".join(lines) if lines else type(error).__name__
    if "LexerNoViableAltException" in text or "mismatched input" in text or "no viable alternative" in text:
        text += (
            "; a value with spaces, quotes or brackets must be quoted inside the override, e.g. "
            "'data.name=\"my data (1)\"' in the shell"
        )
    return "config: " + text
