"""What reproducing a run costs beside the training it repeats. Prints figures measured in this one
run; asserts nothing.

In a fresh copy of the repository (committed): `reprolab train` of the regularized preset on the
built-in dataset, then `reprolab reproduce` of that run. Prints reproduce's wall time, the run's
own training time (`wall_time_s`, the training loop alone) and their ratio: what reading the record
back, rebuilding code and data, a fresh process and recording the reproduction add.

    python benchmarks/reproduce.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from common import clean_env, copy_repository, timed


def main() -> None:
    env = clean_env()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        for args in (["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm", "bench"]):
            subprocess.run(["git", *args], cwd=repo, check=True, timeout=120)
        wall_train, _, out = timed(["reprolab", "train", "--no-progress"], repo, env)
        trained = json.loads(out[out.index("{") :])
        wall, _, out = timed(["reprolab", "reproduce", trained["mlflow_run_id"]], repo, env)
    training = trained["wall_time_s"]
    print(f"`reprolab train` (regularized, seed 0):  {wall_train:6.1f} s wall, training loop {training:.1f} s")
    print(f"`reprolab reproduce` of that run:        {wall:6.1f} s wall")
    print(f"  reproduce / the run's training time:   {wall / training:6.2f}x")
    print(f"  verdict: {out.splitlines()[0]}")


if __name__ == "__main__":
    main()
