"""After `dvc repro` (`make pipeline`): say where the pipeline's numbers differ from the committed
ones, one line a number, and why when reprolab can tell: `dvc metrics diff HEAD` over the declared
metrics and the report's and the audit's summaries (other values, such as a field new in this
version, listed apart), then the kernels each training ran with (results/<preset>/train.json,
`numerics`), what dvc.lock says made the committed outputs against what made these (the code and
parameters each stage ran with), and the workspace against HEAD.

Run from the project's root; prints nothing outside a git repository with a commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

SUMMARIES = ("reports/summary.json", "reports/audit/summary.json")
CODE = ("src", "conf", "pyproject.toml", "requirements.lock")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300)


def _committed(path: Path) -> dict:
    shown = _run("git", "show", f"HEAD:{path.as_posix()}")
    return json.loads(shown.stdout) if shown.returncode == 0 else {}


def _kernels(brief: dict) -> str:
    return (
        f"{brief.get('mode') or 'not recorded'} on {brief.get('cpu_vendor') or 'a CPU of unrecorded vendor'} (CPU "
        f"capability {brief.get('cpu_capability')}, MKL branch {brief.get('mkl_branch')}, OpenBLAS kernels "
        f"{brief.get('openblas_coretype') or 'none'}, oneDNN "
        f"{'on' if brief.get('onednn_enabled') else 'off'})"
    )


def causes() -> list[str]:
    """Why numbers may differ from HEAD's, the likeliest first."""
    found = []
    for train in sorted(Path("results").glob("*/train.json")):
        now, then = json.loads(train.read_text()).get("numerics"), _committed(train).get("numerics")
        if now != then:
            now, then = now or {}, then or {}
            found.append(f"the kernels differ ({train}): committed {_kernels(then)}, now {_kernels(now)}")
            if now.get("cpu_vendor") != then.get("cpu_vendor") and now.get("mode") == "portable":
                found.append(
                    "portable numerics are meant to give the same bits on x86-64-v3 CPUs of every vendor, and have "
                    "been checked on one vendor's CPUs only (docs/reproduce.md): a difference here is worth reporting"
                )
            break
    found += _lock_changes()
    if _run("git", "diff", "--quiet", "HEAD", "--", "params.yaml").returncode:
        found.append("params.yaml differs from the committed one (`dvc params diff HEAD`)")
    if _run("git", "diff", "--quiet", "HEAD", "--", *CODE).returncode:
        found.append(f"the code or configuration differs from HEAD (`git diff HEAD -- {' '.join(CODE)}`)")
    return found


def _locked(text: str) -> tuple[set[str], set[str]]:
    """The (path, md5) of every stage's deps that no stage writes (code, configuration, data)
    and the (key, value) of its params in a dvc.lock."""
    stages = (yaml.safe_load(text) or {}).get("stages", {})
    outs = {o["path"] for stage in stages.values() for o in stage.get("outs", [])}
    deps = {
        f"{d['path']} {d.get('md5')}"
        for stage in stages.values()
        for d in stage.get("deps", [])
        if d["path"] not in outs
    }
    params = {
        f"{key}={json.dumps(value, sort_keys=True)}"
        for stage in stages.values()
        for values in stage.get("params", {}).values()
        for key, value in values.items()
    }
    return deps, params


def _lock_changes() -> list[str]:
    """What made the committed outputs (HEAD's dvc.lock) against what made these (dvc.lock now)."""
    committed, now = _run("git", "show", "HEAD:dvc.lock"), Path("dvc.lock")
    if committed.returncode or not now.is_file():
        return []
    (deps_then, params_then), (deps_now, params_now) = _locked(committed.stdout), _locked(now.read_text())
    found = []
    code = sorted({entry.rsplit(" ", 1)[0] for entry in deps_now - deps_then})
    if code:
        shown = ", ".join(code[:6]) + (f" (+{len(code) - 6} more)" if len(code) > 6 else "")
        found.append(f"the committed outputs were made by other code or data than these (dvc.lock: {shown})")
    keys = sorted({entry.split("=", 1)[0] for entry in params_now - params_then})
    if keys:
        shown = ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        found.append(f"the committed outputs were made with other parameters (dvc.lock: {shown} new or changed)")
    return found


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def main() -> int:
    if _run("git", "rev-parse", "--verify", "-q", "HEAD").returncode:
        return 0
    targets = [str(path) for path in sorted(Path("results").glob("*/metrics.json"))]
    targets += [path for path in SUMMARIES if Path(path).is_file()]
    done = _run("dvc", "metrics", "diff", "HEAD", "--json", "--targets", *targets)
    if done.returncode:
        print(f"could not compare with the committed numbers: {done.stderr.strip().splitlines()[-1:]}")
        return 0
    changed = json.loads(done.stdout or "{}")
    rows = [
        (path, name, values.get("old"), values.get("new"))
        for path, metrics in sorted(changed.items())
        for name, values in sorted(metrics.items())
        if not name.split(".")[-1].endswith("_id")  # an audit's or a run's id is new on every run
    ]
    numbers = [f"  {path} {name}: {old} committed, {new} now" for path, name, old, new in rows if _number(old)]
    others = [f"  {path} {name}: {old} committed, {new} now" for path, name, old, new in rows if not _number(old)]
    if numbers:
        print(
            f"{len(numbers)} number{'s differ' if len(numbers) > 1 else ' differs'} from the committed ones "
            f"(dvc metrics diff HEAD):"
        )
        print("\n".join(numbers[:40] + ([f"  ... {len(numbers) - 40} more"] if len(numbers) > 40 else [])))
    else:
        print("Every number is as committed (dvc metrics diff HEAD over the metrics and both summaries: no change).")
    if others:
        print(f"Other values differ (a field new in this version, or a text): {len(others)}")
        print("\n".join(others[:10] + ([f"  ... {len(others) - 10} more"] if len(others) > 10 else [])))
    if not rows:
        return 0
    for cause in causes() or [
        "reprolab cannot tell why: the kernels, the code and parameters that made them, and the workspace are as "
        "committed; the libraries may differ (each run's environment.json in MLflow lists them)"
    ]:
        print(f"  cause: {cause}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
