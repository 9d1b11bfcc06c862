"""After `dvc repro` (`make pipeline`): say where the pipeline's numbers differ from the committed
ones, one line a number, and why when reprolab can tell: `dvc metrics diff HEAD` over the declared
metrics and the report's and the audit's summaries, then the kernels each training ran with
(results/<preset>/train.json, `numerics`), the parameters and the code against HEAD.

Run from the project's root; prints nothing outside a git repository with a commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    if _run("git", "diff", "--quiet", "HEAD", "--", "params.yaml").returncode:
        found.append("params.yaml differs from the committed one (`dvc params diff HEAD`)")
    if _run("git", "diff", "--quiet", "HEAD", "--", *CODE).returncode:
        found.append(f"the code or configuration differs from HEAD (`git diff HEAD -- {' '.join(CODE)}`)")
    return found


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
    lines = [
        f"  {path} {name}: {values.get('old')} committed, {values.get('new')} now"
        for path, metrics in sorted(changed.items())
        for name, values in sorted(metrics.items())
        if not name.split(".")[-1].endswith("_id")  # an audit's or a run's id is new on every run
    ]
    if not lines:
        print("Every number is as committed (dvc metrics diff HEAD over the metrics and both summaries: no change).")
        return 0
    print(f"{len(lines)} numbers differ from the committed ones (dvc metrics diff HEAD):")
    print("\n".join(lines[:40] + ([f"  ... {len(lines) - 40} more"] if len(lines) > 40 else [])))
    for cause in causes() or [
        "reprolab cannot tell why: the kernels, params.yaml and the code are as committed; the libraries may "
        "differ (each run's environment.json in MLflow lists them)"
    ]:
        print(f"  cause: {cause}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
