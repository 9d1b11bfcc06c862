"""`reprolab reproduce RUN`: a recorded run rebuilt from its record (code as it ran, config, data by
digest) and trained again, in a copy of the project on the small built-in dataset, 2 epochs a run."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import clean_env, client_for, commit, copy_repository, new_store, retraining, runs, sh
from userdata import save, series

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
QUICK = ["experiments.regularized.train.max_epochs=2", "experiments.baseline.train.max_epochs=2"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_repository(tmp_path_factory.mktemp("reproduce"))
    new_store(repo)
    commit(repo, "the project")
    return repo


def train(repo: Path, *overrides: str, extra_env: dict | None = None) -> str:
    data = [] if any(o.startswith("data=") for o in overrides) else ["data=synthetic_small"]
    done = sh(repo, "reprolab", "train", "--no-progress", *QUICK, *data, *overrides, extra_env=extra_env)
    return json.loads(done.stdout[done.stdout.index("{") :])["mlflow_run_id"]


def reproduce(repo: Path, *args: str, check: bool = True, extra_env: dict | None = None):
    return sh(repo, "reprolab", "reproduce", *args, check=check, extra_env=extra_env)


def status(repo: Path) -> str:
    return sh(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout


def test_uncommitted_code_is_captured_and_reproduced_without_touching_the_workspace(repo):
    # Pipeline outputs that change under git are not "dirty": only the source counts.
    (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text() + "\n")
    clean = train(repo)
    assert client_for(repo).get_run(clean).data.tags["reprolab.git_dirty"] == "false"
    sh(repo, "git", "checkout", "dvc.lock")
    # A staged edit, an unstaged edit and a new module that git does not know yet, all used.
    (repo / "src/reprolab/scaling.py").write_text("LR_SCALE = 0.5\n")
    training = repo / "src/reprolab/training.py"
    text = training.read_text().replace("lr=run.train.lr,", "lr=run.train.lr * LR_SCALE,")
    training.write_text(text.replace("import torch\n", "import torch\n\nfrom reprolab.scaling import LR_SCALE\n", 1))
    sh(repo, "git", "add", "src/reprolab/training.py")
    metrics = repo / "src/reprolab/metrics.py"
    metrics.write_text(metrics.read_text() + "\n# an unstaged edit\n")
    dirty = train(repo)
    tags = client_for(repo).get_run(dirty).data.tags
    assert tags["reprolab.git_dirty"] == "true"
    captured = tags["reprolab.source.commit"]
    assert sh(repo, "git", "diff", "--name-only", "HEAD", captured).stdout.split() == [
        "src/reprolab/metrics.py",
        "src/reprolab/scaling.py",
        "src/reprolab/training.py",
    ]
    assert f"refs/reprolab/sources/{captured}" in sh(repo, "git", "for-each-ref").stdout
    # Back to the commit: the workspace no longer has the code that made the run.
    sh(repo, "git", "reset", "-q", "--hard")
    sh(repo, "git", "clean", "-qfd", "src")
    before = status(repo)
    done = reproduce(repo, dirty)
    assert f"({dirty}): identical" in done.stdout, done.stdout
    assert status(repo) == before
    client = client_for(repo)
    assert client.get_run(dirty).data.tags["reprolab.reproduced"] == "identical"
    (again,) = [r for r in runs(repo, "reproduce") if r.data.tags["reprolab.reproduces"] == dirty]
    assert again.info.status == "FINISHED" and again.data.tags["reprolab.reproduce.verdict"] == "identical"
    assert again.data.metrics["val_accuracy"] == client.get_run(dirty).data.metrics["val_accuracy"]
    # Its record names the code that trained (the dirty run's) apart from the command's (HEAD, clean).
    assert again.data.tags["reprolab.source.commit"] == captured and again.data.tags["reprolab.git_dirty"] == "true"
    head = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert again.data.tags["reprolab.reproduced_with.source.commit"] == head
    assert again.data.tags["reprolab.reproduced_with.git_dirty"] == "false"


def _alter_archive(archive: Path, name: str, old: str, new: str) -> None:
    """Rewrite one file inside a run's source archive, as a damaged or tampered store would."""
    members = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            members[member.name] = tar.extractfile(member).read()
    assert old.encode() in members[name]
    members[name] = members[name].replace(old.encode(), new.encode())
    with tarfile.open(archive, "w:gz") as tar:
        for member_name, content in members.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def _rewrite_manifest(archive: Path) -> str:
    """Make the archive's manifest agree with its files again, as someone covering an edit would;
    return the new source digest."""
    from reprolab.record.source import MANIFEST, source_digest

    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = json.loads(members[MANIFEST])
    manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in members.items() if name != MANIFEST}
    manifest["digest"] = source_digest(manifest["files"])
    members[MANIFEST] = json.dumps(manifest).encode()
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return manifest["digest"]


def test_an_edited_source_archive_is_never_run_and_a_signed_record_tells_a_forged_one(repo):
    """Code that does not match what the run recorded is refused before it runs: an archive that
    disagrees with its manifest, then with the run's source digest. Rewritten all the way (archive,
    manifest and tag), an unsigned record cannot tell, and says so; a signed one refuses it."""
    key = {"REPROLAB_SIGNING_KEY": "made-up-key-for-this-test"}
    client = client_for(repo)
    for signed in (False, True):
        env = key if signed else {}
        run_id = train(repo, "seed=1", extra_env=env)
        assert ("reprolab.signature" in client.get_run(run_id).data.tags) == signed
        archive = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "source/source.tar.gz"
        _alter_archive(archive, "src/reprolab/training.py", "lr=run.train.lr,", "lr=0.05,")
        digest = None
        for said in (
            "no longer matches its manifest (altered: src/reprolab/training.py)",
            "not the source it recorded",
        ):
            done = reproduce(repo, run_id, check=False, extra_env=env)
            assert done.returncode == 2 and said in done.stderr, done.stdout + done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
            assert "reprolab.reproduced" not in client.get_run(run_id).data.tags  # nothing ran, nothing recorded
            digest = digest or _rewrite_manifest(archive)  # now the manifest agrees with the edit
        client.set_tag(run_id, "reprolab.source.digest", digest)
        done = reproduce(repo, run_id, check=False, extra_env=env)
        if signed:
            assert done.returncode == 2 and "signature does not match its record" in done.stderr, done.stderr
        else:
            assert "unsigned record" in done.stderr and done.returncode == 1, done.stdout + done.stderr
            assert ": differs: " in done.stdout and "cause: code: " not in done.stdout


def test_a_run_without_its_archive_trains_its_commit_and_a_moved_commit_tag_is_refused(tmp_path):
    """The archive gone, the run's commit gives its code (checked against the source digest it
    recorded); the commit tag moved to a commit with other code, nothing runs and the line says why."""
    repo = copy_repository(tmp_path / "repo")
    new_store(repo)
    commit(repo, "the project")
    run_id = train(repo, "seed=1")
    client = client_for(repo)
    archive = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "source/source.tar.gz"
    archive.unlink()
    assert f"({run_id}): identical" in reproduce(repo, run_id).stdout
    training = repo / "src/reprolab/training.py"
    training.write_text(training.read_text().replace("lr=run.train.lr,", "lr=run.train.lr * 2,"))
    commit(repo, "other training code")
    moved = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    for tag in ("reprolab.source.commit", "mlflow.source.git.commit"):
        client.set_tag(run_id, tag, moved)
    done = reproduce(repo, run_id, check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stdout + done.stderr
    assert f"its commit {moved} holds source" in done.stderr and "not the source it recorded" in done.stderr


def test_a_record_from_before_the_references_key_reproduces(repo):
    """A params.yaml recorded before `references` and k-fold existed (and before its digest tag):
    the keys change no result, so the record is read as showing no references, no fold and a
    holdout audit, and the run trains again as any other."""
    run_id = train(repo, "seed=9")
    client = client_for(repo)
    params = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "config/params.yaml"
    text = params.read_text()
    assert "references:" in text and "  fold: null\n" in text and "  resampling: holdout\n" in text
    text = re.sub(r"(?m)^references:\n(- .*\n)*", "", text).replace("  fold: null\n", "")
    params.write_text(re.sub(r"(?m)^  (resampling|folds|repeats): .*\n", "", text))
    client.delete_tag(run_id, "reprolab.config_sha256")
    done = reproduce(repo, run_id)
    assert f"({run_id}): identical" in done.stdout, done.stdout + done.stderr


def test_an_edited_config_artifact_is_refused_naming_the_key(repo):
    run_id = train(repo, "seed=4", "experiment=regularized")
    artifacts = Path(client_for(repo).get_run(run_id).info.artifact_uri.removeprefix("file://"))
    params = artifacts / "config/params.yaml"
    text = params.read_text()
    hidden = re.search(r"(?ms)^  regularized:.*?hidden_size: (\d+)", text)
    params.write_text(text[: hidden.start(1)] + "64" + text[hidden.end(1) :])
    named = "experiments.regularized.model.hidden_size=64, but the run trained with 32"
    done = reproduce(repo, run_id, check=False)
    assert done.returncode == 2 and named in done.stderr, done.stderr
    audit = ["audit", "--before", run_id, "--after", "regularized", "--seeds", "0-1", "data=synthetic_small"]
    done = sh(repo, "reprolab", *audit, check=False)
    assert done.returncode == 2 and named in done.stderr and "[1/" not in done.stdout, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_replaced_user_file_is_found_in_dvcs_cache_and_a_lost_one_is_one_line(repo):
    X, y, _ = series(n=60, classes=2, steps=10, seed=3)
    data = save(repo / "data/raw/mine.npz", X=X, y=y)
    sh(repo, "dvc", "add", "data/raw/mine.npz")
    commit(repo, "my data")
    on_file = ["data=npz", "data.name=mine", "data.user_file=data/raw/mine.npz", "experiment=regularized"]
    run_id = train(repo, *on_file)
    md5 = client_for(repo).get_run(run_id).data.tags["reprolab.data.file_md5"]
    # The file is replaced (the old bytes stay in DVC's cache only).
    X2, y2, _ = series(n=60, classes=2, steps=10, seed=4)
    data.unlink()
    save(data, X=X2, y=y2)
    sh(repo, "dvc", "add", "data/raw/mine.npz")
    done = reproduce(repo, run_id)
    assert f"({run_id}): identical" in done.stdout, done.stdout
    # Gone from the cache too, and no remote holds it: one line naming the file and the fix.
    cached = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    assert cached.is_file()
    cached.unlink()
    done = reproduce(repo, run_id, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "data/raw/mine.npz" in line and md5 in line and "dvc pull" in line, line
    assert "the file at its path has other bytes" in line, line


def test_a_user_file_never_added_to_dvc_is_kept_in_its_cache_and_found_after_it_is_overwritten(repo):
    X, y, _ = series(n=60, classes=2, steps=10, seed=5)
    data = save(repo / "data/raw/untracked.npz", X=X, y=y)
    before = status(repo)
    on_file = ["data=npz", "data.name=untracked", "data.user_file=data/raw/untracked.npz", "experiment=regularized"]
    run_id = train(repo, *on_file)
    md5 = client_for(repo).get_run(run_id).data.tags["reprolab.data.file_md5"]
    assert (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).is_file()
    assert status(repo) == before and not (repo / "data/raw/untracked.npz.dvc").exists()  # the workspace as it was
    X2, y2, _ = series(n=60, classes=2, steps=10, seed=6)
    data.unlink()
    save(data, X=X2, y=y2)
    done = reproduce(repo, run_id)
    assert f"({run_id}): identical" in done.stdout, done.stdout


def test_a_sweep_child_and_its_summary_reproduce_and_a_forged_result_is_not_reused(repo):
    # Run keys no other test of this module makes (their runs would be reused in place of these).
    own = ["experiments.regularized.train.lr=0.0015", "experiments.baseline.train.lr=0.0015"]
    sweep = ["--presets", "baseline,regularized", "--seeds", "0", "--workers", "1", *QUICK, *own]
    sweep.append("data=synthetic_small")
    sh(repo, "reprolab", "compare", "--retrain", *sweep)
    client = client_for(repo)
    (summary,) = runs(repo, "compare-summary")
    children = sorted(runs(repo, "compare"), key=lambda r: r.info.run_name)
    assert len(children) == 2
    done = reproduce(repo, summary.info.run_id)
    assert done.stdout.count(": identical") == 2 and "the comparison stands" in done.stdout, done.stdout
    assert client.get_run(summary.info.run_id).data.tags["reprolab.reproduced"] == "identical"
    # A result.json changed after the run recorded it is not reused: that run trains again.
    forged = children[0]
    path = Path(forged.info.artifact_uri.removeprefix("file://")) / "result.json"
    result = json.loads(path.read_text())
    result["metrics"]["val_accuracy"] = 0.99
    path.write_text(json.dumps(result))
    done = sh(repo, "reprolab", "compare", *sweep)
    assert f"not reusing MLflow run {forged.info.run_id}: its result.json is not the one recorded" in done.stderr
    assert "1 of 2 runs reused" in done.stdout, done.stdout
    # And reproducing it refuses to compare with a record that was changed.
    done = reproduce(repo, forged.info.run_id, check=False)
    assert done.returncode == 2 and "its result.json is not the one recorded with it" in done.stderr, done.stderr
    assert "its record was changed after the run" in done.stderr
    # Forged all the way (result.json, its digest tag and the logged metric agree), its metrics still
    # disagree with its own predictions and the dataset's labels: not reused, never shown.
    other = children[1]
    path = Path(other.info.artifact_uri.removeprefix("file://")) / "result.json"
    result = json.loads(path.read_text())
    result["metrics"]["val_accuracy"] = 0.99
    text = json.dumps(result)
    path.write_text(text)
    client.set_tag(other.info.run_id, "reprolab.result_sha256", hashlib.sha256(text.encode()).hexdigest())
    client.log_metric(other.info.run_id, "val_accuracy", 0.99)
    done = sh(repo, "reprolab", "compare", *sweep)
    said = f"not reusing MLflow run {other.info.run_id}: its val_accuracy (0.99) is not what its own predictions give"
    assert said in done.stderr, done.stderr
    assert "0.990" not in done.stdout and "1 of 2 runs reused" in done.stdout, done.stdout
    # A compare made only of reused runs rests on them (rests_on.json): its summary reproduces them all.
    done = sh(repo, "reprolab", "compare", *sweep)
    assert "2 of 2 runs reused" in done.stdout, done.stdout
    newest = max(runs(repo, "compare-summary"), key=lambda r: r.info.start_time)
    done = reproduce(repo, newest.info.run_id)
    assert done.stdout.count(": identical") == 2, done.stdout
    assert (
        "the comparison stands: every run it rests on is identical (2 runs checked, 0 trained for it and 2 it reused"
        in (done.stdout)
    )


def test_an_audit_is_made_again_from_its_runs_records_and_from_moved_results(repo, tmp_path):
    """What reproducing an audit's summary run does once its runs' bits moved (`recheck`), on a
    one-change audit: its runs' own records make its recorded verdict again with every claim the
    same; results in which after's validation predictions all came right move after's mean, and
    the move is named."""
    import dataclasses

    import yaml

    from reprolab.audit.recheck import recheck
    from reprolab.results import RunResult
    from reprolab.tracking.store import Store

    before = train(repo, "seed=0", "experiment=regularized", "experiments.regularized.train.lr=0.004")
    audit = ["audit", "--before", before, "--after", "regularized", "--seeds", "0-1", "--no-models", *QUICK]
    sh(repo, "reprolab", *audit, "--output-dir", "recheck", "data=synthetic_small")
    client = client_for(repo)
    summary = max(runs(repo, "audit-summary"), key=lambda r: r.info.start_time)
    reruns = []
    for row in csv.DictReader((repo / "recheck/runs.csv").open()):
        folder = Path(client.get_run(row["mlflow_run_id"]).info.artifact_uri.removeprefix("file://"))
        recorded = RunResult.from_json((folder / "result.json").read_text())
        params = yaml.safe_load((folder / "config/params.yaml").read_text())
        reruns.append((row["mlflow_run_id"], params, None, recorded, recorded))
    store = Store(client, summary.info.experiment_id, f"sqlite:///{repo / 'mlflow.db'}")
    same = recheck(store, summary, tmp_path / "same", reruns)
    assert same["unavailable"] is None and same["same_as_recorded"] is True, same
    assert same["changed"] == [] and same["claims"] >= 4 and same["largest_move"]["difference"] == 0, same
    right = []
    after = {
        r["mlflow_run_id"] for r in csv.DictReader((repo / "recheck/runs.csv").open()) if r["configuration"] == "after"
    }
    for run_id, params, _, recorded, _ in reruns:
        now = recorded
        if run_id in after:
            truth = [int(y) for y in _split(params, "val").y]
            now = dataclasses.replace(
                recorded,
                predictions={**recorded.predictions, "val": truth},
                metrics={**recorded.metrics, "val_accuracy": 1.0},
            )
        right.append((run_id, params, None, recorded, now))
    moved = recheck(store, summary, tmp_path / "moved", right)
    assert moved["unavailable"] is None and moved["largest_move"]["mean"].startswith("after "), moved
    assert moved["largest_move"]["now"] == 1.0 and moved["largest_move"]["difference"] > 0, moved


TINY = [  # a stand-in for a small real set: 8 validation sequences, as in the UCR archive's smallest
    "data=synthetic_small",
    "data.generator.n_train=24",
    "data.generator.n_val=8",
    "data.generator.n_test=40",
    "data.expected_digest=null",
    "data.prepared_path=data/prepared/tiny.npz",
]


def test_a_kfold_audit_runs_each_fold_as_a_run_of_its_own_that_reproduces(repo, tmp_path):
    """audit.resampling=kfold on 24 + 8 sequences: each configuration and seed is 3 runs, one per
    fold of the 32 pooled, each with its fold in its config, its own dataset digest and run key;
    the test split is the same in every fold; the report measures over the 32; a fold run
    reproduces as identical, and the audit's claims are made again from its runs' records."""
    import yaml

    from reprolab.audit.recheck import recheck
    from reprolab.results import RunResult
    from reprolab.tracking.store import Store

    before = train(repo, "seed=0", "experiment=regularized", "experiments.regularized.train.lr=0.004", *TINY)
    kfold = ["audit.resampling=kfold", "audit.folds=3", "audit.repeats=1"]
    audit = ["audit", "--before", before, "--after", "regularized", "--seeds", "0-1", "--no-models", *QUICK, *TINY]
    done = sh(repo, "reprolab", *audit, *kfold, "--output-dir", "kfold")
    assert "12 runs over seeds [0, 1], 3 folds x 1 repeats" in done.stdout, done.stdout
    summary = json.loads((repo / "kfold/summary.json").read_text())
    assert summary["resampling"] == {"method": "kfold", "folds": 3, "repeats": 1, "split_seed": 0}
    assert summary["split_sizes"] == {"train": 32, "val": 32, "test": 40}, summary["split_sizes"]
    assert (
        "stratified 3-fold cross-validation (once) over the 32 training and validation"
        in (repo / "kfold/audit.md").read_text()
    )
    rows = list(csv.DictReader((repo / "kfold/runs.csv").open()))
    assert sorted((r["configuration"], r["seed"], r["fold"]) for r in rows) == sorted(
        (c, s, f) for c in ("before", "after") for s in "01" for f in "012"
    )
    assert len({r["dataset_digest"] for r in rows}) == 3 and summary["dataset_digests"]["after"] not in {
        r["dataset_digest"] for r in rows
    }
    client = client_for(repo)
    records = {r["mlflow_run_id"]: client.get_run(r["mlflow_run_id"]) for r in rows}
    assert len({run.data.tags["reprolab.run_key"] for run in records.values()}) == 12
    reruns, tests = [], set()
    for run_id, run in records.items():
        folder = Path(run.info.artifact_uri.removeprefix("file://"))
        params = yaml.safe_load((folder / "config/params.yaml").read_text())
        assert (
            params["data"]["fold"]["folds"] == 3
            and str(params["data"]["fold"]["index"]) == run.data.tags["reprolab.audit.fold"]
        )
        tests.add(_split(params, "test").X.tobytes())
        result = RunResult.from_json((folder / "result.json").read_text())
        reruns.append((run_id, params, None, result, result))
    assert len(tests) == 1  # every fold tests on the same held-out split
    store = Store(client, next(iter(records.values())).info.experiment_id, f"sqlite:///{repo / 'mlflow.db'}")
    audit_run = max(runs(repo, "audit-summary"), key=lambda r: r.info.start_time)
    same = recheck(store, audit_run, tmp_path / "made", reruns)
    assert same["unavailable"] is None and same["same_as_recorded"] is True and same["changed"] == [], same
    one = rows[-1]["mlflow_run_id"]
    assert f"({one}): identical" in reproduce(repo, one).stdout


def _split(params: dict, split: str):
    """The split `split` of the dataset a run's params build."""
    from reprolab import data as datasets
    from reprolab.config import validate

    return datasets.build(validate(params).data).splits[split]


def test_a_run_whose_logged_metric_was_edited_is_refused_in_one_line(repo):
    """What the UI shows is checked against the run's own record before it is judged: a final
    metric or a per-epoch value logged again on the finished run is named, never `identical`."""
    client = client_for(repo)
    final, epoch = train(repo, "seed=2"), train(repo, "seed=3")
    client.log_metric(final, "val_accuracy", 0.99)
    client.log_metric(epoch, "epoch/val_accuracy", 0.99, step=1)
    for run_id, named in (
        (final, "its logged val_accuracy (0.99) disagrees"),
        (epoch, "epoch/val_accuracy at epoch 1"),
    ):
        done = reproduce(repo, run_id, check=False)
        assert done.returncode == 2, done.stdout + done.stderr
        assert named in done.stderr and "result.json" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert "reprolab.reproduced" not in client.get_run(run_id).data.tags


def test_models_alias_and_bad_references_resolve_or_say_what_to_give(repo):
    done = reproduce(repo, "not-a-run", check=False)
    assert done.returncode == 2 and "names no run" in done.stderr and "Traceback" not in done.stderr
    done = reproduce(repo, "0" * 32, check=False)
    assert done.returncode == 2 and "is not in" in done.stderr and "MLFLOW_TRACKING_URI" in done.stderr
    done = reproduce(repo, "models:/nothing@after", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # A UI page of another server, or of another experiment, does not show the run found here.
    run = client_for(repo).get_run(train(repo, "seed=7"))
    experiment = run.info.experiment_id
    for page, said in (
        (f"http://mlflow.example:5000/#/experiments/{experiment}/runs/{run.info.run_id}", "UI at mlflow.example:5000"),
        (f"http://127.0.0.1:5000/#/experiments/9{experiment}/runs/{run.info.run_id}", f"experiment 9{experiment}"),
    ):
        done = reproduce(repo, page, check=False)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_an_audit_between_runs_of_two_commits_lists_the_training_code_as_a_change(tmp_path):
    """Before: a run at the first commit (learning rate 0.003); after: a run at a commit that
    changed the training code (its learning rate doubled). The code is a change with its share,
    the configurations without it are trained by the first commit's recorded code (and recorded
    with that code: reproduce gives them back), and a setting the old code does not know is
    refused in one line before anything trains."""
    repo = copy_repository(tmp_path / "repo")
    new_store(repo)
    commit(repo, "the project")
    before = train(repo, "experiments.regularized.train.lr=0.003")
    old_source = client_for(repo).get_run(before).data.tags["reprolab.source.commit"]
    training = repo / "src/reprolab/training.py"
    training.write_text(training.read_text().replace("lr=run.train.lr,", "lr=run.train.lr * 2,"))
    commit(repo, "the training code doubles the learning rate")
    after = train(repo)
    audit = ["reprolab", "audit", "--before", before, "--after", after, "--seeds", "0-1", "--workers", "2"]
    sh(repo, *audit, "--no-models", "--output-dir", "out", "data=synthetic_small")
    summary = json.loads((repo / "out/summary.json").read_text())
    code = summary["changes"]["training code"]
    assert code["keys"] == {
        "reprolab.training": [f"the code of run {before[:8]} (commit {old_source[:12]})", "this checkout's code"]
    }
    assert set(summary["changes"]) == {"learning rate", "training code"}
    assert summary["runs_reused"] == 2  # each side's own run
    for metric, attribution in summary["attribution"].items():
        shares = sum(change["shapley"]["mean"] for change in attribution["changes"].values())
        assert abs(shares - attribution["total"]["mean"]) <= 1e-9, metric
    client = client_for(repo)
    with (repo / "out/runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    old_code = {"before", "before + learning rate"}
    for row in rows:
        tags = client.get_run(row["mlflow_run_id"]).data.tags
        if row["configuration"] in old_code:
            assert tags["reprolab.source.commit"] == old_source, row
            if row["reused"] == "False":  # trained by this audit with the recorded code
                assert tags["reprolab.trained_by"] == code["keys"]["reprolab.training"][0], row
        else:
            assert tags["reprolab.source.commit"] != old_source and "reprolab.trained_by" not in tags, row
    # A run the audit trained with the old code gives its result back from its own record.
    (trained,) = [
        r["mlflow_run_id"] for r in rows if r["configuration"] == "before + learning rate" and r["seed"] == "1"
    ]
    assert f"({trained}): identical" in reproduce(repo, trained).stdout
    # A setting that only the new code knows: the old code cannot run the configurations.
    config = repo / "src/reprolab/config/schema.py"
    config.write_text(
        config.read_text().replace(
            "    device: Device = field()\n", "    device: Device = field()\n    lr_scale: float = 1.0\n", 1
        )
    )
    training.write_text(training.read_text().replace("lr=run.train.lr * 2,", "lr=run.train.lr * run.train.lr_scale,"))
    commit(repo, "a learning-rate scale")
    scaled = train(repo, "+experiments.regularized.train.lr_scale=2")
    audit[5] = scaled
    refused = sh(repo, *audit, "--output-dir", "refused", "data=synthetic_small", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "cannot run the configuration 'before'" in line and "lr_scale" in line, line
    assert not (repo / "refused").exists()
    # A side whose recorded code was altered in the store is not the code that trained it.
    artifacts = Path(client.get_run(before).info.artifact_uri.removeprefix("file://"))
    _alter_archive(artifacts / "source/source.tar.gz", "src/reprolab/training.py", "lr=run.train.lr,", "lr=0.05,")
    audit[5] = after
    refused = sh(repo, *audit, "--output-dir", "refused", "data=synthetic_small", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert f"run {before}'s source archive no longer matches its manifest (altered: src/reprolab/training.py)" in line
    assert not (repo / "refused").exists()
    assert not [r for r in runs(repo, "audit-summary") if r.info.status == "RUNNING"]


def cold(repo: Path, *args: str, **stand_in: str) -> subprocess.CompletedProcess:
    """A command as a fresh interpreter (the tests' warm one runs torch in the portable mode only)."""
    env = clean_env(code_from=repo, **stand_in)
    return subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_a_lesser_cpu_is_named_as_the_cause_and_the_result_judged_against_its_seeds(repo):
    """ATEN_CPU_CAPABILITY=default stands in for a CPU without AVX: a native run's bits differ
    there, the kernels are named first, and its result is judged against its configuration's
    other seeds; a portable run gives the same bits."""
    sweep = ["--presets", "baseline", "--seeds", "0-2", "--workers", "1", *QUICK, "data=synthetic_small"]
    done = cold(repo, "reprolab", "compare", "--retrain", *sweep, "compute.numerics=native")
    assert done.returncode == 0, done.stdout + done.stderr
    native = next(r for r in runs(repo, "compare") if r.data.tags["reprolab.seed"] == "1")
    assert native.data.tags["reprolab.run_key"] != native.data.tags["reprolab.config_key"]
    done = cold(repo, "reprolab", "reproduce", native.info.run_id, ATEN_CPU_CAPABILITY="default")
    assert re.search(r": differs.*; cause: numerics\.cpu_capability: AVX\w* -> DEFAULT", done.stdout), done.stdout
    assert "over 3 seeds" in done.stdout or "no longer holds" in done.stdout, done.stdout
    assert done.returncode in (0, 1) and (done.returncode == 0) == ("the result stands" in done.stdout)
    (reproduction,) = [r for r in runs(repo, "reproduce") if r.data.tags["reprolab.reproduces"] == native.info.run_id]
    folder = Path(reproduction.info.artifact_uri.removeprefix("file://"))
    judged = json.loads((folder / "reproduction.json").read_text())
    assert judged["seeds"] == 3 and set(judged["noise"]) == {
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
        "train_val_gap",
    }
    assert judged["causes"][0].startswith("numerics.cpu_capability")
    exact = cold(repo, "reprolab", "reproduce", "--exact", native.info.run_id, ATEN_CPU_CAPABILITY="default")
    assert exact.returncode == 1, exact.stdout + exact.stderr
    # The comparison those runs made, made again from their reproductions: its claim (the target on
    # each preset) compared, the numbers in the reproduce summary's reproduction.json.
    summary = max(runs(repo, "compare-summary"), key=lambda r: r.info.start_time)
    done = cold(repo, "reprolab", "reproduce", summary.info.run_id, ATEN_CPU_CAPABILITY="default")
    assert "the comparison" in done.stdout and "made again from the reproduced runs" in done.stdout, done.stdout
    assert (done.returncode == 0) == bool(re.search(r"the comparison stands: made again", done.stdout)), done.stdout
    (made,) = [r for r in runs(repo, "reproduce-summary") if r.data.tags["reprolab.reproduces"] == summary.info.run_id]
    folder = Path(made.info.artifact_uri.removeprefix("file://"))
    numbers = json.loads((folder / "reproduction.json").read_text())["made_again"]
    assert numbers["unavailable"] is None and numbers["claims"] == 1, numbers
    assert numbers["largest_move"]["mean"].startswith("baseline "), numbers
    # The same run in the portable mode: its kernels do not depend on the CPU.
    portable = train(repo, "experiment=baseline", "seed=1")
    done = cold(repo, "reprolab", "reproduce", portable, ATEN_CPU_CAPABILITY="default")
    assert f"({portable}): identical" in done.stdout and done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def long_run(repo) -> str:
    """A run whose retraining takes long enough (about 20 s here) to be interrupted halfway."""
    long = ["data=synthetic_small", "seed=6", "experiments.baseline.train.max_epochs=600"]
    done = sh(repo, "reprolab", "train", "--no-progress", *long, timeout=900)
    return json.loads(done.stdout[done.stdout.index("{") :])["mlflow_run_id"]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGKILL"])
def test_reproduce_stops_at_a_signal_and_leaves_no_process_or_scratch_folder(repo, long_run, tmp_path, signum):
    """A signal stops the retraining at once (not when it finishes); SIGKILL, which reproduce cannot
    catch, still takes the retraining with it and its scratch folders go (a watcher removes them)."""
    import signal
    import time

    import psutil

    run_id = long_run
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = clean_env(code_from=repo, TMPDIR=str(scratch))
    with (tmp_path / "reproduce.log").open("w") as log:
        process = subprocess.Popen(["reprolab", "reproduce", run_id], cwd=repo, env=env, stdout=log, stderr=log)
    try:
        child = retraining(process.pid)
        assert [p.name for p in scratch.iterdir() if p.name.startswith("reprolab-")]
        sent = time.monotonic()
        process.send_signal(getattr(signal, signum))
        code = process.wait(timeout=60)
        took = time.monotonic() - sent
        assert took < 10, f"reproduce took {took:.0f} s to stop"
        assert code == (130 if signum == "SIGTERM" else -9), (tmp_path / "reproduce.log").read_text()
        _, alive = psutil.wait_procs([child], timeout=15)
        assert not alive, "the retraining outlived reproduce"
        deadline = time.monotonic() + 15
        while [p for p in scratch.iterdir() if p.name.startswith("reprolab-")] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p.name for p in scratch.iterdir() if p.name.startswith("reprolab-")]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
