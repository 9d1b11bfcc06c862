"""Check the MLflow UI in a real browser, as a user opens it, and save screenshots.

Opens the project's experiment in headless Chromium (Debian's `chromium`, driven by Playwright;
nothing is downloaded, and any request beyond 127.0.0.1 fails the check) through the links
`reprolab ui` prints, and asserts:

1. the link lands on the training runs (not MLflow 3's GenAI overview), where the pipeline's
   four runs are listed with their logged models and their validation accuracy, each drawn in
   its preset's colour (`mlflow.runColor`);
2. with every run shown, the audit's runs are folded under its summary run;
3. the chart view overlays the presets' per-epoch curves (screenshot);
4. the after preset's logged-model page shows its validation and test accuracy, each with the
   dataset it was measured on;
5. the registered model's `after` alias points at that model;
6. the comparison page lists the runs side by side.

    python scripts/check_mlflow_ui.py --uri http://127.0.0.1:5001 --screenshots out/
    python scripts/check_mlflow_ui.py --store sqlite:///mlflow.db --screenshots docs/   # make screenshots

With --store it starts `mlflow ui` on that store on a free 127.0.0.1 port and stops it after.
The pipeline's runs are those the newest `report` run names. Exits 0 when every check passed,
1 with the failed check otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Headless as root in a sandboxed machine with no outside network: no sandbox, no GPU, and no
# background connections (refused here, many at a time, and slow to fail).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# MLflow 3 opens an "Assistant" side panel on first load that covers a third of the page; its
# state lives in localStorage, so it is preset before the app's scripts run.
HIDE_ASSISTANT = (
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
)
TIMEOUT_MS = 60_000  # the UI bundle takes a few seconds to paint on two busy cores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ui(store: str, log: Path) -> tuple[str, subprocess.Popen]:
    """`mlflow ui` on `store`, in its own process group (its uvicorn child is stopped with it)."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "ui",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).read()
            return uri, process
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                stop_ui(process)
                raise SystemExit(f"mlflow ui did not start; see {log}") from None
            time.sleep(0.3)


def stop_ui(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def find_runs(uri: str, experiment_name: str) -> tuple[str, dict]:
    """The experiment id and the pipeline's runs, by preset, as the newest report names them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SystemExit(f"no experiment {experiment_name!r} at {uri}")
    reports = client.search_runs(
        [experiment.experiment_id],
        "tags.`reprolab.kind` = 'report' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not reports:
        raise SystemExit(f"no report run at {uri}: run the pipeline first (make pipeline)")
    prefix = "reprolab.run."
    runs = {
        key[len(prefix) :]: client.get_run(value)
        for key, value in reports[0].data.tags.items()
        if key.startswith(prefix)
    }
    return experiment.experiment_id, runs


def in_table(value: float) -> str:
    """A metric in the UI: the shortest decimal that round-trips (JavaScript's number
    formatting, the same as Python's repr)."""
    return repr(float(value))


# The background colours of a row's elements (the run's colour dot among them).
ROW_COLOURS = """(runId) => Array.from(document.querySelectorAll(`[role=row][row-id='${runId}'] *`))
    .map(element => getComputedStyle(element).backgroundColor)"""


# How many runs the table shows (a run's row is split over several elements with its row-id).
ROWS_SHOWN = """new Set(Array.from(document.querySelectorAll('[role=row][row-id]'))
    .map(row => row.getAttribute('row-id'))).size"""


def rgb(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def check(uri: str, experiment_id: str, runs: dict, screenshots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from reprolab.tracking.links import ui_paths
    from reprolab.tracking.registry import AFTER_ALIAS

    after_preset = "regularized" if "regularized" in runs else next(iter(runs))
    after = runs[after_preset]
    data_name = after.data.params["data.name"]
    links = {what: uri + path for what, path in ui_paths(experiment_id, data_name).items()}
    screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script(HIDE_ASSISTANT)
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)  # assertions keep their own 5 s default otherwise
        page = context.new_page()
        outside = []
        page.on(
            "request",
            lambda request: (
                outside.append(request.url)
                if not request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                else None
            ),
        )

        # 1. The training runs: the runs page, each pipeline run with its model, its colour
        # and (once the column is shown) its validation accuracy.
        page.goto(links["training runs"])
        expect(page).to_have_url(re.compile(r"/experiments/\d+/runs\?"))
        for preset, run in runs.items():
            row = page.locator(f"[role=row][row-id='{run.info.run_id}']")
            expect(row.filter(has_text=run.info.run_name).first).to_be_visible()
            # The Models column: the logged model, or for a registered one its registry version.
            model = run.outputs.model_outputs[0].model_id
            expect(row.locator(f"a[href*='{model}'], a[href^='#/models/']").first).to_be_visible()
            colour = run.data.tags["mlflow.runColor"]
            assert rgb(colour) in page.evaluate(ROW_COLOURS, run.info.run_id), f"{preset} not drawn in {colour}"
        if page.locator("[role=columnheader]", has_text="val_accuracy").count() == 0:
            # exact: a second button, "Show more columns (N total)", also matches "Columns".
            page.get_by_role("button", name="Columns", exact=True).click()
            page.get_by_text("val_accuracy", exact=True).click()
            page.keyboard.press("Escape")
        for run in runs.values():
            row = page.locator(f"[role=row][row-id='{run.info.run_id}']")
            expect(row.filter(has_text=in_table(run.data.metrics["val_accuracy"]))).to_have_count(1)
        page.screenshot(path=str(screenshots / "runs.png"))
        print(
            "training runs: "
            + ", ".join(f"{r.info.run_name} {in_table(r.data.metrics['val_accuracy'])}" for r in runs.values())
            + f", each with its model and colour; screenshot {screenshots / 'runs.png'}"
        )

        # 3. The chart view: the presets' per-epoch curves overlaid, one colour each.
        page.locator("label:has(input[value=CHART])").click()
        expect(page.get_by_text("epoch/val_accuracy", exact=True).first).to_be_visible()
        page.wait_for_timeout(1500)  # the charts animate in
        page.screenshot(path=str(screenshots / "charts.png"))
        print(f"chart view: per-epoch curves; screenshot {screenshots / 'charts.png'}")

        # 2. Every run: sweeps fold under their summary runs, the pipeline's runs stay in view.
        page.goto(links["every run (sweeps folded under their summary runs)"])
        for run in runs.values():
            expect(page.locator(f"[role=row][row-id='{run.info.run_id}']").first).to_be_visible()
        shown = page.evaluate(ROWS_SHOWN)
        matching = int(re.search(r"(\d+) matching runs", page.get_by_text("matching runs").first.inner_text()).group(1))
        assert shown < matching, f"{shown} rows for {matching} runs: the sweeps' runs are not folded"
        print(f"every run: {shown} rows for {matching} runs, sweeps folded under their summary runs")

        # 4. The after preset's logged model: its metrics with the datasets they were measured on.
        model = after.outputs.model_outputs[0].model_id
        page.goto(f"{uri}/#/experiments/{experiment_id}/models/{model}?workflowType=machine_learning")
        expect(page.get_by_text(after.info.run_name, exact=True).first).to_be_visible()
        for key, split in (("val_accuracy", "val"), ("test_accuracy", "test")):
            row = page.locator("[role=row]", has_text=key).filter(has_text=in_table(after.data.metrics[key]))
            expect(row.filter(has_text=f"{data_name}-{split}").first).to_be_visible()
        expect(page.get_by_text("Datasets used").first).to_be_visible()
        page.screenshot(path=str(screenshots / "model.png"), full_page=True)
        print(
            f"logged model {model}: val and test accuracy with their datasets; screenshot {screenshots / 'model.png'}"
        )

        # 5. The registry: the `after` alias on the after preset's model.
        page.goto(links["the after preset's registered model"])
        expect(page.get_by_text(f"@ {AFTER_ALIAS}").or_(page.get_by_text(f"@{AFTER_ALIAS}")).first).to_be_visible()
        print(f"registered model: alias {AFTER_ALIAS!r} shown")

        # 6. The comparison of before and after, each value under its run.
        page.set_viewport_size({"width": 1600, "height": 1300})
        ids = [run.info.run_id for run in runs.values()]
        quote = urllib.parse.quote
        page.goto(
            f"{uri}/#/compare-runs?runs={quote(json.dumps(ids))}&experiments={quote(json.dumps([experiment_id]))}"
        )
        expect(page.get_by_text(f"Comparing {len(runs)} Runs")).to_be_visible()
        # For the screenshot: fold the plots and list only the parameters that differ, so the
        # run details, the differing parameters and the metrics fit in one view.
        page.get_by_text("Visualizations", exact=True).click()
        page.get_by_role("switch").first.click()
        for run in runs.values():
            expect(page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
        page.screenshot(path=str(screenshots / "compare.png"))
        print(f"compare page: {len(runs)} runs listed; screenshot {screenshots / 'compare.png'}")
        browser.close()
        assert not outside, f"the browser tried to reach outside 127.0.0.1: {outside}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--uri", help="a running tracking server or UI")
    where.add_argument("--store", help="a backend store to serve with `mlflow ui`, e.g. sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="reprolab")
    parser.add_argument(
        "--screenshots",
        type=Path,
        required=True,
        help="directory for runs.png, charts.png, model.png and compare.png",
    )
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium (or set CHROMIUM)")
    process = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            uri = args.uri
            if args.store:
                uri, process = start_ui(args.store, Path(tmp) / "ui.log")
            experiment_id, runs = find_runs(uri, args.experiment)
            check(uri, experiment_id, runs, args.screenshots)
        except AssertionError as error:
            print(f"check_mlflow_ui: failed: {error}", file=sys.stderr)
            return 1
        finally:
            if process is not None:
                stop_ui(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
