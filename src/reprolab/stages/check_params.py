"""Stage `check_params`: stop the pipeline when params.yaml is not the composition of conf/.

Editing conf/ does not change params.yaml by itself (`dvc exp run` and `reprolab compose` do), so
without this stage every other one would report "up to date" on old parameters. Inside
`dvc exp run` (DVC_EXP_NAME is set) DVC has just composed params.yaml from conf/ and the `-S`
overrides, so it is current by construction. The note this stage writes never changes, so its
rerunning does not invalidate the stages after it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from reprolab import entrypoint
from reprolab.config import NOT_RESULTS, ConfigError, compose_raw, differences, read_params, validate_params
from reprolab.files import atomic_write
from reprolab.stages import PARAMS_FILE, RESULTS_DIR

NOTE = "params.yaml is the composition of conf/ (or of conf/ with `dvc exp run -S` overrides)\n"


def staleness(on_disk: dict[str, Any], composed: dict[str, Any]) -> Optional[str]:
    """Why params.yaml is not what conf/ composes to, with the fix that fits; None when it is."""

    def results(raw: dict[str, Any]) -> dict[str, Any]:
        kept = {key: value for key, value in raw.items() if key not in NOT_RESULTS}
        # The one key of those sections that changes results: which kernels compute them.
        kept["compute"] = {"numerics": (raw.get("compute") or {}).get("numerics")}
        return kept

    changed = differences(results(composed), results(on_disk))
    if not changed:
        return None
    key, conf_value, params_value = changed[0]
    more = f"; {len(changed) - 1} more keys differ" if len(changed) > 1 else ""
    params_data, conf_data = on_disk.get("data", {}).get("name"), composed.get("data", {}).get("name")
    if params_data != conf_data:
        option = _data_option(params_data)
        if option is None:
            return (
                f"params: {PARAMS_FILE} uses data {params_data!r}, which no file in conf/data/ names, but "
                f"conf/config.yaml selects {conf_data!r}: write conf/data/{params_data}.yaml for it (start from "
                f"conf/data/npz.yaml, docs/your-data.md), select it with `- data: {params_data}` in the defaults "
                f"of conf/config.yaml, then run `reprolab compose`; or `reprolab compose` to go back to {conf_data!r}"
            )
        return (
            f"params: {PARAMS_FILE} uses data {params_data!r} (conf/data/{option}.yaml) but conf/config.yaml "
            f"selects {conf_data!r}; `dvc repro` and `dvc exp run` build what conf/ selects, so make the choice "
            f"there: set `- data: {option}` in the defaults of conf/config.yaml (and put any data.* overrides "
            f"in conf/data/{option}.yaml), then run `reprolab compose`"
        )
    return (
        f"params: {PARAMS_FILE} is out of date with conf/ ({key}: params.yaml has {params_value!r}, conf/ "
        f"gives {conf_value!r}{more}). If you edited conf/, run `reprolab compose`, then `dvc repro`. If you "
        f"composed params.yaml with overrides, put them in conf/ (`dvc repro` and `dvc exp run` start from "
        f"it), or run them as an experiment: `dvc exp run -S {key}=...`"
    )


def _data_option(name: Optional[str]) -> Optional[str]:
    """The file in conf/data/ whose dataset is called `name`, if any."""
    for path in sorted(Path("conf/data").glob("*.yaml")):
        try:
            if compose_raw([f"data={path.stem}"])["data"].get("name") == name:
                return path.stem
        except ConfigError:
            continue
    return None


def main() -> int:
    on_disk = read_params(PARAMS_FILE)
    validate_params(on_disk, PARAMS_FILE)
    if not os.environ.get("DVC_EXP_NAME"):
        problem = staleness(on_disk, compose_raw())
        if problem:
            raise ConfigError(problem)
    atomic_write(RESULTS_DIR / "params_check.txt", lambda tmp: tmp.write_text(NOTE))
    print(NOTE.strip())
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
