"""The real DVC pipeline in a temporary copy of the repository, checked through MlflowClient.

The copy trains every preset for a few epochs (conf/train/default.yaml edited, params.yaml
recomposed); it is built once per test run, and each test gets a copy of it as built.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PRESETS,
    REPO_ROOT,
    built_once,
    clean_env,
    client_for,
    commit,
    copy_built_repository,
    copy_repository,
    mlflow_uri,
    queue_two_experiments,
    runs,
    set_in_yaml,
    sh,
    shorten_pipeline,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent


def build_pipeline(repo: Path) -> None:
    """A copy of the project, shortened (4 epochs, 2 seeds, the small dataset), after one full
    `dvc repro`."""
    copy_repository(repo)
    shorten_pipeline(repo)
    sh(repo, "reprolab", "compose")
    commit(repo, "short epochs for tests")
    sh(repo, "dvc", "repro")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """The pipeline, built once per test run (shared by pytest-xdist's workers); never changed."""
    return built_once(tmp_path_factory, "pipeline", build_pipeline)


@pytest.fixture
def repo(built, tmp_path) -> Path:
    """Each test's own copy of the built pipeline, as it was after its `dvc repro`: tests that
    change it run side by side and in any order."""
    return copy_built_repository(built, tmp_path / "repo")


def test_repro_records_one_complete_run_per_preset(repo):
    train_runs = runs(repo)
    assert sorted(run.data.tags["reprolab.preset"] for run in train_runs) == sorted(PRESETS)
    digest = json.loads((repo / "results/data.json").read_text())["digest"]
    commit_sha = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    client = client_for(repo)
    for run in train_runs:
        preset = run.data.tags["reprolab.preset"]
        assert run.info.status == "FINISHED" and run.info.run_name == f"{preset}-seed0"
        tags = run.data.tags
        assert tags["reprolab.dataset_digest"] == digest and tags["reprolab.seed"] == "0"
        assert tags["reprolab.dvc_stage"] == f"train@{preset}"
        assert tags["mlflow.source.git.commit"] == commit_sha
        # The pipeline's own outputs changed under git while it ran; its source did not.
        assert tags["reprolab.git_dirty"] == "false" and tags["reprolab.source.commit"] == commit_sha
        # Params: the run's resolved config, flattened.
        params = run.data.params
        expected = yaml.safe_load((repo / "params.yaml").read_text())["experiments"][preset]
        assert params["model.hidden_size"] == str(expected["model"]["hidden_size"])
        assert params["train.lr"] == str(expected["train"]["lr"])
        assert params["data.expected_digest"] == digest
        # Final metrics: those training wrote, and rounded to 6 places in the DVC metrics file.
        fit = json.loads((repo / f"results/{preset}/train.json").read_text())
        metrics = json.loads((repo / f"results/{preset}/metrics.json").read_text())
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_loss"):
            assert run.data.metrics[key] == fit["metrics"][key]
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert metrics[key] == round(fit["metrics"][key], 6)
        history = client.get_metric_history(run.info.run_id, "epoch/val_accuracy")
        assert [point.step for point in history] == list(range(1, int(run.data.metrics["epochs_run"]) + 1))
        # Dataset inputs: the three splits, with the DVC digest.
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"synthetic_small-train", "synthetic_small-val", "synthetic_small-test"}
        for dataset_input in inputs.values():
            assert dataset_input.dataset.digest == digest[:36]
            assert {t.key: t.value for t in dataset_input.tags}["sha256"] == digest
        # Artifacts: config, the whole result, and (from the report) the confusion matrix.
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config", "evaluation", "result.json"} <= names
        assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} == {"evaluation/confusion.png"}
        assert tags["reprolab.target_met"] == str(metrics["target_met"]).lower()


def test_logged_model_reloads_and_reproduces_the_logged_val_accuracy(repo):
    import mlflow.pytorch
    import torch

    from reprolab.config import load_params
    from reprolab.data import load

    os.chdir(repo)  # prepared_path is relative to the repository
    try:
        config = load_params(repo / "params.yaml")
        val = load(config.data).splits["val"]
    finally:
        os.chdir(REPO_ROOT)
    for run in runs(repo):
        assert run.outputs.model_outputs, "no model linked to the run"
        # Into a folder of the test's: MLflow leaves the one it would make itself in /tmp.
        with mlflow_uri(f"sqlite:///{repo / 'mlflow.db'}"), tempfile.TemporaryDirectory() as into:
            model = mlflow.pytorch.load_model(f"models:/{run.outputs.model_outputs[0].model_id}", dst_path=into)
        with torch.no_grad():
            predicted = model.eval()(torch.from_numpy(val.X)).argmax(dim=1).numpy()
        assert float(np.mean(predicted == val.y)) == pytest.approx(run.data.metrics["val_accuracy"], abs=1e-7)


def test_a_logged_model_loads_and_predicts_in_a_clean_environment_elsewhere(repo, tmp_path):
    """A fresh virtual environment in another folder: the libraries, not this repository (the
    project's site-packages are reachable, but its editable install of reprolab is not)."""
    import sysconfig

    from reprolab.config import load_params
    from reprolab.data import load

    (run,) = [r for r in runs(repo) if r.data.tags["reprolab.preset"] == "regularized"]
    model_id = run.outputs.model_outputs[0].model_id
    elsewhere = tmp_path / "elsewhere"
    sh(
        repo,
        "mlflow",
        "artifacts",
        "download",
        "-u",
        f"models:/{model_id}",
        "-d",
        str(elsewhere / "model"),
        extra_env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"},
    )
    model_dir = next(path.parent for path in (elsewhere / "model").rglob("MLmodel"))
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert not [line for line in requirements if line.split("=")[0] == "reprolab"], requirements
    os.chdir(repo)
    try:
        val = load(load_params(repo / "params.yaml").data).splits["val"]
    finally:
        os.chdir(REPO_ROOT)
    np.save(elsewhere / "X_val.npy", val.X)
    np.save(elsewhere / "y_val.npy", val.y)

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(elsewhere / "venv")], check=True, timeout=120)
    python = elsewhere / "venv/bin/python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    (Path(site) / "libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PYTHON"))}

    def there(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    assert there("-c", "import reprolab").returncode != 0  # not this repository's code
    loaded = there(
        "-c",
        "import mlflow.pyfunc, numpy as np; "
        f"model = mlflow.pyfunc.load_model({str(model_dir)!r}); "
        "logits = model.predict(np.load('X_val.npy')); "
        "print((np.asarray(logits).argmax(axis=1) == np.load('y_val.npy')).mean())",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert float(loaded.stdout.split()[-1]) == pytest.approx(run.data.metrics["val_accuracy"], abs=1e-7)
    served = there(
        "-m",
        "mlflow",
        "models",
        "predict",
        "-m",
        str(model_dir),
        "-i",
        str(model_dir / "serving_input_example.json"),
        "-t",
        "json",
        "--env-manager",
        "local",
        "-o",
        "predictions.json",
    )
    assert served.returncode == 0, served.stderr
    predictions = json.loads((elsewhere / "predictions.json").read_text())["predictions"]
    example = json.loads((model_dir / "serving_input_example.json").read_text())["inputs"]
    assert np.asarray(predictions).shape == (len(example), 2)


def test_report_run_links_the_training_runs(repo):
    (report,) = runs(repo, "report")
    train_ids = {run.data.tags["reprolab.preset"]: run.info.run_id for run in runs(repo)}
    assert {preset: report.data.tags[f"reprolab.run.{preset}"] for preset in PRESETS} == train_ids
    names = {a.path for a in client_for(repo).list_artifacts(report.info.run_id, "report")}
    assert names == {
        "report/comparison.md",
        "report/learning_curves.png",
        "report/confusion.png",
        "report/summary.json",
    }
    assert (repo / "reports/learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_judges_every_preset_over_the_audits_seeds(repo):
    """Seed 0 of each preset is the training stage's run, seed 1 the report trains (nested under
    its run); "target met" is "yes" only when every seed's run meets the target."""
    (report,) = runs(repo, "report")
    swept = {f"{preset}-seed{seed}" for preset in PRESETS for seed in (0, 1)}
    ids = {name: report.data.tags[f"reprolab.seed_run.{name}"] for name in swept}
    trained = runs(repo, "compare")
    assert {run.info.run_id for run in trained} == {ids[f"{preset}-seed1"] for preset in PRESETS}
    assert {run.data.tags["mlflow.parentRunId"] for run in trained} == {report.info.run_id}
    train_ids = {run.data.tags["reprolab.preset"]: run.info.run_id for run in runs(repo)}
    assert {preset: ids[f"{preset}-seed0"] for preset in PRESETS} == train_ids
    markdown = (repo / "reports/comparison.md").read_text()
    assert "## Over seeds 0, 1" in markdown and "## Seed 0: the models in models/" in markdown
    summary = json.loads((repo / "reports/summary.json").read_text())
    client = client_for(repo)
    for preset in PRESETS:
        assert f"| {preset} | 0,1 |" in markdown
        met = [client.get_run(ids[f"{preset}-seed{seed}"]).data.tags["reprolab.target_met"] for seed in (0, 1)]
        verdict = summary[preset]["target_over_seeds"]
        assert verdict in ("yes", "no", "cannot tell") and (verdict != "yes" or met == ["true", "true"])
        stats = summary[preset]["over_seeds"]["val_accuracy"]
        assert stats["low"] <= stats["mean"] <= stats["high"]


def test_a_fresh_clone_that_shares_the_store_reproduces_a_pipeline_run(repo, tmp_path):
    clone = tmp_path / "clone"
    sh(repo, "git", "clone", "-q", str(repo), str(clone))
    store = f"sqlite:///{repo / 'mlflow.db'}"
    registered = client_for(repo).get_model_version_by_alias("reprolab-synthetic_small", "after").run_id
    done = sh(
        clone,
        "reprolab",
        "reproduce",
        "models:/reprolab-synthetic_small@after",
        extra_env={"MLFLOW_TRACKING_URI": store},
    )
    assert f"regularized-seed0 ({registered}): identical" in done.stdout, done.stdout
    assert sh(clone, "git", "status", "--porcelain").stdout == ""
    assert client_for(repo).get_run(registered).data.tags["reprolab.reproduced"] == "identical"


def test_audit_stage_reports_and_records_its_runs(repo):
    summary = json.loads((repo / "reports/audit/summary.json").read_text())
    assert summary["seeds"] == [0, 1] and (summary["before"], summary["after"]) == ("baseline", "regularized")
    assert list(summary["changes"]) == ["hidden size", "dropout", "learning rate", "early stopping"]
    digest = json.loads((repo / "results/data.json").read_text())["digest"]
    assert summary["dataset_digests"] == {"before": digest, "after": digest}
    (summary_run,) = runs(repo, "audit-summary")
    assert summary_run.data.tags["reprolab.audit_id"] == summary["audit_id"]
    audit_runs = [run for run in runs(repo, "audit") if run.data.tags["reprolab.audit_id"] == summary["audit_id"]]
    # before and after with seed 0 are the pipeline's baseline and regularized runs, and with
    # seed 1 the report's (it shows every preset over audit.seeds, and ran first): reused.
    assert summary["runs_reused"] == 4 and len(audit_runs) == 2**4 * 2 - 4
    assert {run.info.status for run in audit_runs} == {"FINISHED"}
    assert {run.data.tags["reprolab.dvc_stage"] for run in audit_runs} == {"audit"}
    assert {run.data.tags["mlflow.parentRunId"] for run in audit_runs} == {summary_run.info.run_id}
    with (repo / "reports/audit/runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    pipeline = {run.info.run_id for run in runs(repo) + runs(repo, "compare")}
    assert {row["mlflow_run_id"] for row in rows if row["reused"] == "True"} <= pipeline
    assert {row["mlflow_run_id"] for row in rows if row["reused"] == "False"} == {r.info.run_id for r in audit_runs}
    # Every file the audit and the report write is a declared output: none goes stale unseen by DVC.
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage, folder in (("audit", "reports/audit"), ("report", "reports")):
        declared = {next(iter(out)) if isinstance(out, dict) else out for out in stages[stage]["outs"]}
        written = {
            str(path.relative_to(repo))
            for path in (repo / folder).iterdir()
            if path.is_file() and path.name != ".gitignore"
        }
        assert written == declared, stage


def test_second_repro_is_a_noop_and_status_is_clean(repo):
    before = len(runs(repo))
    done = sh(repo, "dvc", "repro")
    assert "Running stage" not in done.stdout
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
    assert len(runs(repo)) == before


def test_editing_a_module_reruns_exactly_the_stages_that_run_it(repo):
    from reprolab.sources import closure

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    runs_module: dict[str, set[str]] = {}
    for name, stage in stages.items():
        module = re.match(r"python -m (\S+)", stage["cmd"]).group(1)
        expanded = [f"{name}@{item}" for item in stage["matrix"]["preset"]] if "matrix" in stage else [name]
        for path in closure(module):
            runs_module.setdefault(str(path.relative_to(REPO_ROOT)), set()).update(expanded)
    modules = sorted(str(path.relative_to(repo)) for path in (repo / "src/reprolab").rglob("*.py"))
    for module in modules:
        original = (repo / module).read_text()
        (repo / module).write_text(original + "\n# an edit\n")
        try:
            status = dvc_status(repo)
        finally:
            (repo / module).write_text(original)
        assert set(status) == runs_module.get(module, set()), module
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def dvc_status(repo: Path) -> dict:
    """What `dvc status --json` prints, from DVC's Python API in this process (the command costs
    a second and a half of start-up each time)."""
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(repo), Repo(str(repo)) as dvc_repo:  # stage names are relative to the working directory
        return dvc_repo.status()


def test_forced_repro_gives_identical_metrics(repo):
    files = [repo / f"results/{preset}/metrics.json" for preset in PRESETS] + [repo / "results/data.json"]
    before = [path.read_text() for path in files]
    audit = json.loads((repo / "reports/audit/summary.json").read_text())
    sh(repo, "dvc", "repro", "--force")
    assert [path.read_text() for path in files] == before
    again = json.loads((repo / "reports/audit/summary.json").read_text())
    assert again["audit_id"] != audit["audit_id"]  # a new audit, with new runs ...
    assert (again["configurations"], again["verdict"]) == (audit["configurations"], audit["verdict"])  # same results
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def test_push_and_pull_through_the_default_remote(repo, tmp_path):
    sh(repo, "dvc", "remote", "modify", "--local", "local", "url", str(tmp_path / "storage"))
    sh(repo, "dvc", "push")
    shutil.rmtree(repo / ".dvc/cache")
    (repo / "models/gru.npz").unlink()
    (repo / "data/prepared/synthetic_small.npz").unlink()
    sh(repo, "dvc", "pull")
    assert (repo / "models/gru.npz").is_file() and (repo / "data/prepared/synthetic_small.npz").is_file()
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def test_dvc_metrics_show_holds_headline_metrics_in_200_columns(repo):
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    files = next(iter(metrics.values()))["data"]
    assert {f"results/{preset}/metrics.json" for preset in PRESETS} == set(files)
    for file in files.values():
        assert set(file["data"]) == {"train_accuracy", "val_accuracy", "test_accuracy", "train_val_gap", "target_met"}
    shown = sh(repo, "dvc", "metrics", "show", extra_env={"COLUMNS": "200"}).stdout
    assert max(len(line) for line in shown.splitlines()) <= 200, shown


def test_dvc_dag_in_the_docs_is_the_pipelines(repo):
    """docs/pipeline.md shows `dvc dag --mermaid`; the ASCII form is unreadable at 256 columns."""
    mermaid = sh(repo, "dvc", "dag", "--mermaid").stdout.strip()
    assert f"```mermaid\n{mermaid}\n```" in (REPO_ROOT / "docs/pipeline.md").read_text()


def test_dvc_plots_show_renders_every_chart_offline(repo, tmp_path):
    """`dvc plots show`'s page in headless Chromium with the network off: every vega chart drawn,
    every image loaded, and not one request beyond the page's own files."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    index = tmp_path / "plots/index.html"
    definitions = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    images = [d for d in definitions if isinstance(d, str) and d.endswith(".png")]
    charts = len(definitions) - len(images)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True)
        page = context.new_page()
        requests, errors = [], []
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(index.as_uri())
        page.wait_for_function(
            f"document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length >= {charts}",
            timeout=60_000,
        )
        loaded = page.evaluate("Array.from(document.images).map(image => image.naturalWidth > 0)")
        browser.close()
    assert not errors, errors
    assert loaded == [True] * len(images)
    assert not [url for url in requests if not url.startswith(("file:", "data:"))], requests


def test_stale_params_are_refused(repo):
    defaults = repo / "conf/train/default.yaml"
    original = defaults.read_text()
    set_in_yaml(defaults, r"^weight_decay: .*", "weight_decay: 0.001")
    before = len(runs(repo))
    try:
        sh(repo, "dvc", "repro")
    except AssertionError as failure:
        assert "params.yaml is out of date with conf/" in str(failure)
        assert "reprolab compose" in str(failure)
    else:
        pytest.fail("training on stale params.yaml was not refused")
    finally:
        defaults.write_text(original)
    assert len(runs(repo)) == before
    sh(repo, "dvc", "repro")  # conf/ is back as it was: the check passes, nothing retrains
    assert len(runs(repo)) == before


def test_changing_one_preset_reruns_only_its_stages(repo):
    set_in_yaml(repo / "conf/preset/regularized.yaml", r"^  lr: 0.001", "  lr: 0.002")
    sh(repo, "reprolab", "compose")
    changed = set(json.loads(sh(repo, "dvc", "status", "--json").stdout))
    # lstm and gru are "the fix with another cell": they inherit regularized's lr in conf/;
    # regularized is the audit's "after". check_params reruns on any conf/ edit; it passes and
    # changes nothing downstream.
    assert changed == {"check_params", "train@regularized", "train@lstm", "train@gru", "report", "audit"}
    done = sh(repo, "dvc", "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", done.stdout))
    assert "prepare" not in ran and "train@baseline" not in ran and "evaluate@baseline" not in ran
    assert {"train@regularized", "evaluate@regularized", "report"} <= ran
    # The audit retrained only the configurations that hold the new learning rate (the 8 of 16
    # combinations with the learning rate change, for 2 seeds), less "after" with seed 0, which
    # train@regularized had just trained, and with seed 1, which the report had.
    summary = json.loads((repo / "reports/audit/summary.json").read_text())
    assert summary["runs_reused"] == 8 * 2 + 2
    with (repo / "reports/audit/runs.csv").open() as handle:
        retrained = {row["configuration"] for row in csv.DictReader(handle) if row["reused"] == "False"}
    assert retrained == {
        "after - hidden size",
        "after - dropout",
        "after - early stopping",
        "before + learning rate",
        "before + hidden size + learning rate",
        "before + dropout + learning rate",
        "before + learning rate + early stopping",
    }
    commit(repo, "regularized lr 0.002")


def test_changing_the_training_code_reuses_no_run(repo):
    training = repo / "src/reprolab/training.py"
    original = training.read_text()
    training.write_text(original + "\n# a change to the code that trains\n")
    known = {run.info.run_id for run in runs(repo) + runs(repo, "compare")}
    try:
        done = sh(repo, "dvc", "repro")
        ran = set(re.findall(r"Running stage '([^']+)'", done.stdout))
        assert {f"train@{preset}" for preset in PRESETS} | {"audit"} <= ran
        # Only runs made with the new code are reused: the baseline and regularized runs that
        # the training stages (seed 0) and the report (seed 1) had just made; none from before.
        with (repo / "reports/audit/runs.csv").open() as handle:
            reused = {row["mlflow_run_id"] for row in csv.DictReader(handle) if row["reused"] == "True"}
        assert len(reused) == 4 and not reused & known
    finally:
        training.write_text(original)
    sh(repo, "dvc", "repro", "audit")  # the original code again: its runs are all reusable
    assert json.loads((repo / "reports/audit/summary.json").read_text())["runs_reused"] == 2**4 * 2


def test_a_failing_run_is_marked_failed_and_leaves_no_half_outputs(repo):
    (repo / "models/gru.npz").unlink()
    (repo / "models/gru.npz").mkdir()  # saving the model will fail after training
    (repo / "results/gru/train.json").unlink()
    try:
        done = sh(repo, "python", "-m", "reprolab.stages.train", "gru", check=False)
    finally:
        (repo / "models/gru.npz").rmdir()
    assert done.returncode != 0
    newest = max(runs(repo), key=lambda run: run.info.start_time)
    assert newest.data.tags["reprolab.preset"] == "gru" and newest.info.status == "FAILED"
    assert not (repo / "results/gru/train.json").exists()
    assert not list((repo / "models").glob(".gru.npz.*")) and not list((repo / "results/gru").glob(".*.tmp"))
    sh(repo, "dvc", "repro")  # and the pipeline recovers


def test_ctrl_c_marks_the_run_killed(repo):
    preset_file = repo / "conf/preset/baseline.yaml"
    original = preset_file.read_text()
    set_in_yaml(preset_file, r"^  lr: 0.01", "  lr: 0.01\n  max_epochs: 5000")  # long enough to interrupt
    sh(repo, "reprolab", "compose")
    before = {run.info.run_id for run in runs(repo)}
    log = repo.parent / "ctrl-c.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "reprolab.stages.train", "baseline"],
            cwd=repo,
            env=clean_env(code_from=repo),
            stdout=output,
            stderr=output,
            # As a background job of a non-interactive shell starts it, whatever started pytest.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline, new = time.time() + 60, []
        while not new and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
            new = [run for run in runs(repo) if run.info.run_id not in before]
        assert new, "the training run never appeared in MLflow"
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=60)
        preset_file.write_text(original)
        sh(repo, "reprolab", "compose")
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    assert client_for(repo).get_run(new[0].info.run_id).info.status == "KILLED"
    assert not list((repo / "models").glob(".baseline.npz.*"))
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def test_dvc_exp_run_with_hydra_overrides_and_queue(repo):
    commit(repo, "pipeline results")  # as a user commits dvc.lock before experimenting
    saved = {name: (repo / name).read_text() for name in ("params.yaml", "dvc.lock")}
    sh(repo, "dvc", "exp", "run", "-S", "experiments.gru.model.hidden_size=16")
    assert yaml.safe_load((repo / "params.yaml").read_text())["experiments"]["gru"]["model"]["hidden_size"] == 16
    gru = max(
        (run for run in runs(repo) if run.data.tags["reprolab.preset"] == "gru"), key=lambda run: run.info.start_time
    )
    assert gru.data.params["model.hidden_size"] == "16" and gru.data.tags.get("reprolab.dvc_experiment")
    for name, text in saved.items():  # back to the workspace before the experiment
        (repo / name).write_text(text)
    sh(repo, "dvc", "checkout", "--force")
    before = {run.info.run_id for run in runs(repo)}
    status = queue_two_experiments(repo)
    queued = [run for run in runs(repo) if run.info.run_id not in before]
    lstm = [run for run in queued if run.data.tags["reprolab.preset"] == "lstm"]
    assert {run.data.params["model.hidden_size"] for run in lstm} == {"8", "12"}, status
    assert len({run.data.tags["reprolab.dvc_experiment"] for run in lstm}) == 2
    assert "Failed" not in status and status.count("Success") == 2, status
    assert all(run.info.status == "FINISHED" for run in queued)
    assert all(run.data.tags.get("reprolab.dvc_experiment") for run in queued)
    # With experiments to compare, docs/pipeline.md's `dvc exp show` fits 200 columns and
    # shows neither run ids nor unchanged parameters.
    (command,) = [
        line.split("  #")[0].strip()
        for line in (REPO_ROOT / "docs/pipeline.md").read_text().splitlines()
        if line.startswith("dvc exp show --only-changed")
    ]
    shown = sh(repo, *shlex.split(command), "--no-pager", extra_env={"COLUMNS": "200"}).stdout
    assert max(len(line) for line in shown.splitlines()) <= 200, shown
    assert "hidden_size" in shown and "val_accuracy" in shown and "mlflow_run_id" not in shown
    assert "…" not in shown.splitlines()[1], shown  # no column cut to an ellipsis


def test_a_stage_that_fails_under_dvc_repro_keeps_its_old_outputs(repo):
    outputs = [
        "models/regularized.npz",
        "results/regularized/train.json",
        "results/regularized/history.csv",
        "results/regularized/test_predictions.csv",
    ]
    before = {name: (repo / name).read_bytes() for name in outputs}
    set_in_yaml(repo / "conf/preset/regularized.yaml", r"^  lr: 0\.\d+", "  lr: 0.0042")
    sh(repo, "reprolab", "compose")
    unreachable = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9/"}  # the discard port: nothing listens
    done = sh(repo, "dvc", "repro", "train@regularized", check=False, extra_env=unreachable)
    assert done.returncode != 0 and "cannot use MLflow store" in done.stdout + done.stderr
    assert {name: (repo / name).read_bytes() for name in outputs} == before
