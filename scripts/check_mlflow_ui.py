"""Check the MLflow UI in a real browser: the runs are listed with their validation accuracy.

Opens the project's experiment in headless Chromium (Debian's `chromium`, driven by Playwright;
nothing is downloaded), shows the `val_accuracy` column, asserts that each named run's row
holds its run name and its validation accuracy as MLflow stores it, then opens the run
comparison page and asserts that it lists both runs. Saves a screenshot of each page.

    python scripts/check_mlflow_ui.py --uri http://127.0.0.1:5001 --screenshots out/
    python scripts/check_mlflow_ui.py --store sqlite:///mlflow.db --screenshots docs/

With --store it starts `mlflow ui` on that store on a free 127.0.0.1 port and stops it after.
Runs are the newest FINISHED training runs (`reprolab.kind = train`) with the given names.
Exits 0 when every check passed, 1 with the failed check otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
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
TRAIN_RUNS = "tags.`reprolab.kind` = 'train'"
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


def find_runs(uri: str, experiment_name: str, names: list[str]) -> tuple[str, dict[str, tuple[str, float]]]:
    """The experiment id and, per run name, the newest finished training run's id and val accuracy."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SystemExit(f"no experiment {experiment_name!r} at {uri}")
    found = {}
    for name in names:
        runs = client.search_runs(
            [experiment.experiment_id],
            f"attributes.run_name = '{name}' and attributes.status = 'FINISHED' and {TRAIN_RUNS}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs or "val_accuracy" not in runs[0].data.metrics:
            raise SystemExit(f"no finished training run {name!r} with val_accuracy at {uri}")
        found[name] = (runs[0].info.run_id, runs[0].data.metrics["val_accuracy"])
    return experiment.experiment_id, found


def in_table(value: float) -> str:
    """A metric in the runs table: the shortest decimal that round-trips (JavaScript's number
    formatting, the same as Python's repr), e.g. 0.7534999847412109 for a float32 0.7535."""
    return repr(float(value))


def check(uri: str, experiment_id: str, runs: dict[str, tuple[str, float]], screenshots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script(HIDE_ASSISTANT)
        context.set_default_timeout(TIMEOUT_MS)
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

        # 1. The experiment's training runs (newest first; the audit's runs are filtered out),
        # as a user would search them. Metric columns are hidden by default: show val_accuracy.
        quote = urllib.parse.quote
        page.goto(f"{uri}/#/experiments/{experiment_id}/runs?searchFilter={quote(TRAIN_RUNS)}")
        for name in runs:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        if page.locator("[role=columnheader]", has_text="val_accuracy").count() == 0:
            # exact: a second button, "Show more columns (N total)", also matches "Columns".
            page.get_by_role("button", name="Columns", exact=True).click()
            page.get_by_text("val_accuracy", exact=True).click()
            page.keyboard.press("Escape")
        expect(page.locator("[role=columnheader]", has_text="val_accuracy").first).to_be_visible()
        for name, (run_id, value) in runs.items():
            # The grid splits a row over pinned and scrolling parts; all carry row-id=<run id>.
            row = page.locator(f"[role=row][row-id='{run_id}']")
            # The run's name shows in its name cell and again as its logged model's name.
            expect(row.filter(has_text=name).first).to_be_visible()
            expect(row.filter(has_text=in_table(value))).to_have_count(1)
        screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots / "runs.png"))
        print(
            f"runs table: {', '.join(f'{n} {in_table(v)}' for n, (_, v) in runs.items())}; "
            f"screenshot {screenshots / 'runs.png'}"
        )

        # 2. The comparison of those runs, each value under its run; the screenshot.
        page.set_viewport_size({"width": 1600, "height": 1300})
        ids = [run_id for run_id, _ in runs.values()]
        page.goto(
            f"{uri}/#/compare-runs?runs={quote(json.dumps(ids))}&experiments={quote(json.dumps([experiment_id]))}"
        )
        expect(page.get_by_text(f"Comparing {len(runs)} Runs")).to_be_visible()
        # For the screenshot: fold the plots and list only the parameters that differ, so the
        # run details, the differing parameters and the metrics fit in one view.
        page.get_by_text("Visualizations", exact=True).click()
        page.get_by_role("switch").first.click()
        for name, (run_id, _) in runs.items():
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
            expect(page.get_by_text(run_id, exact=True).first).to_be_visible()
        page.screenshot(path=str(screenshots / "compare.png"))
        print(f"compare page: both runs listed; screenshot {screenshots / 'compare.png'}")
        browser.close()
        assert not outside, f"the browser tried to reach outside 127.0.0.1: {outside}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--uri", help="a running tracking server or UI")
    where.add_argument("--store", help="a backend store to serve with `mlflow ui`, e.g. sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="reprolab")
    parser.add_argument("--runs", default="baseline-seed0,regularized-seed0", help="comma-separated run names")
    parser.add_argument(
        "--screenshots",
        type=Path,
        required=True,
        help="directory for runs.png (the runs table) and compare.png (the comparison)",
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
            experiment_id, runs = find_runs(uri, args.experiment, args.runs.split(","))
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
