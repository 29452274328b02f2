"""The MLflow UI in a real browser (headless chromium + chromedriver, as Debian packages them): the
URL a sweep's summary prints opens its trials best first, `lrtune ui`'s saved view shows their
columns too, and the parent run's page shows the best metric and the note. Screenshots (1600x1000)
go to $LRTUNE_SCREENSHOTS, else .ci/screenshots/.

MLflow's runs table is an ag-grid: a row is split between the pinned and the scrolling part, both
carrying `row-id` (the run id); cells carry `col-id`, e.g. metrics.`accuracy`, params.`optimizer`.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tuning import ui
from tuning.cli import main

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=(
    "needs Debian's chromium and chromium-driver on PATH (apt-get install chromium chromium-driver; "
    ".ci/run installs them where it can)"))]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("LRTUNE_SCREENSHOTS") or ROOT / ".ci" / "screenshots")
TRIAL_PARAMS = ("optimizer", "schedule", "peak_lr")  # peak_lr last: the column a sweep added last


@pytest.fixture(scope="module")
def mlflow_ui(smoke):
    proc, base = ui.serve(f"sqlite:///{smoke.path}/mlflow.db")
    yield base
    ui.stop(proc)


@pytest.fixture
def browser(mlflow_ui):
    """A fresh browser (no stored MLflow state) with a 1600x1000 viewport."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)  # no sandbox: CI runs as root
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           dict(width=1600, height=1000, deviceScaleFactor=1, mobile=False))
    # MLflow 3.17 opens its assistant panel on a first visit, over a third of the table
    driver.get(f"{mlflow_ui}/health")
    driver.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                          "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')")
    yield driver
    driver.quit()


def _screenshot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def _settled(driver, read, ok, timeout: float = 60):
    """read(driver) once ok(value) holds, else the last value read at the timeout (for the assertion)."""
    last = None

    def check(d):
        nonlocal last
        last = read(d)
        return ok(last)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(check)
    except TimeoutException:
        pass
    return last


def _table(driver) -> tuple[list[tuple[str, dict]], dict]:
    """The runs table as shown: [(run id, {col-id: text})] in row order, and {col-id: header text}."""
    rows, headers = driver.execute_script("""
        const rows = {};
        for (const r of document.querySelectorAll('.ag-row[row-id]')) {
            const row = rows[r.getAttribute('row-id')] ??= {index: +r.getAttribute('row-index'), cells: {}};
            for (const c of r.querySelectorAll('.ag-cell[col-id]'))
                row.cells[c.getAttribute('col-id')] = c.innerText.trim();
        }
        const headers = {};
        for (const h of document.querySelectorAll('.ag-header-cell[col-id]'))
            headers[h.getAttribute('col-id')] = h.innerText.trim();
        return [rows, headers];""")
    return [(k, v["cells"]) for k, v in sorted(rows.items(), key=lambda kv: kv[1]["index"])], headers


def _choose_columns(driver, group: str, names, show: bool = True) -> list[str]:
    """Show (or hide) columns with the runs table's column selector, as a person would: search each
    name, tick it under `group` (Attributes, Metrics, Parameters, Tags: a trial's optimizer is both a
    param and a tag). Returns the names the selector does not offer."""
    driver.find_element(By.CSS_SELECTOR, "[data-testid=column-selection-dropdown]").click()
    box = WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search columns']"))
    missing = []
    for name in names:
        box.send_keys(Keys.CONTROL, "a", Keys.BACKSPACE, name)
        tick = _settled(driver, lambda d: d.execute_script("""
            const [group, name] = arguments;
            let current = null;
            const tree = document.querySelector('[data-testid=column-selector-tree]');
            for (const n of tree?.querySelectorAll('.du-bois-light-tree-treenode') ?? []) {
                const title = n.querySelector('.du-bois-light-tree-title')?.innerText.trim();
                if (!n.querySelector('.du-bois-light-tree-indent-unit')) { current = title; continue; }  // a group
                if (current?.startsWith(group) && title === name)
                    return n.querySelector('.du-bois-light-tree-checkbox');
            }
            return null;""", group, name), bool, timeout=10)
        if tick is None:
            missing.append(name)
        elif ("checkbox-checked" in tick.get_attribute("class")) != show:
            tick.click()
    box.send_keys(Keys.ESCAPE)
    return missing


def _summary(smoke, name: str) -> str:
    found = re.search(rf"^{name}:\s+(\S+)$", smoke.out, re.M)
    assert found, f"the sweep's summary has no '{name}:' line:\n{smoke.out}"
    return found.group(1)


def _trials(smoke):
    """The sweep's parent run and its trial runs, best first, from the store."""
    client = MlflowClient(f"sqlite:///{smoke.path}/mlflow.db")
    parent_id = re.search(r"MLflow parent run (\w+)", smoke.out).group(1)
    parent = client.get_run(parent_id)
    metric, sign = parent.data.tags["lrtune.metric"], -1 if parent.data.tags["lrtune.mode"] == "max" else 1
    trials = client.search_runs([parent.info.experiment_id], max_results=1000, filter_string=(
        f"tags.`lrtune.kind` = 'trial' and tags.`mlflow.parentRunId` = '{parent_id}'"))
    return parent, metric, sorted(trials, key=lambda t: sign * t.data.metrics[metric])


def _assert_trials_best_first(rows, trials, metric):
    assert [run_id for run_id, _ in rows] == [t.info.run_id for t in trials], \
        "the table lists exactly the sweep's trials (no parent, no range tests), best first"
    shown = [float(cells[f"metrics.`{metric}`"]) for _, cells in rows]
    assert shown == pytest.approx([t.data.metrics[metric] for t in trials], rel=1e-6)


def _assert_params(rows, trials, headers, params):
    for p in params:
        assert headers.get(f"params.`{p}`") == p, f"no column for param {p}"
        assert [cells.get(f"params.`{p}`") for _, cells in rows] == [t.data.params.get(p) for t in trials], p


def test_the_summary_url_lists_the_trials_best_first_with_their_columns(smoke, mlflow_ui, browser):
    """The URL the summary prints first: the experiment's saved view, which the sweep pointed at
    itself; it opens with the columns, no clicks."""
    parent, metric, trials = _trials(smoke)
    url = mlflow_ui + "/#/" + _summary(smoke, "The trials").split("/#/", 1)[1]  # this test's port
    assert "viewStateShareKey=" in url
    browser.get(url)
    rows, headers = _settled(browser, _table, lambda t: len(t[0]) == len(trials) and "params.`peak_lr`" in t[1])
    _screenshot(browser, "runs-summary-url")
    assert "Sort: " + metric in browser.find_element(By.TAG_NAME, "body").text
    assert headers.get(f"metrics.`{metric}`") == metric
    _assert_trials_best_first(rows, trials, metric)
    _assert_params(rows, trials, headers, ("peak_lr", "optimizer", "schedule"))


def test_the_sweeps_own_url_lists_its_trials_sorted_by_the_metric(smoke, mlflow_ui, browser):
    """The summary's second URL, this sweep's whatever runs later: search and order in the URL;
    columns are no URL parameter, a person picks them."""
    parent, metric, trials = _trials(smoke)
    own = re.search(r"this sweep's, whatever runs later: (\S+)\)", smoke.out).group(1)
    browser.get(mlflow_ui + "/#/" + own.split("/#/", 1)[1])
    _settled(browser, _table, lambda t: len(t[0]) == len(trials))
    # the URL sets search, order and workflow; columns are no URL parameter: a person picks them
    _choose_columns(browser, "Attributes", ["Dataset", "Source", "Models"], show=False)  # empty here
    missing = _choose_columns(browser, "Metrics", [metric]) + _choose_columns(browser, "Parameters", TRIAL_PARAMS)
    rows, headers = _settled(browser, _table, lambda t: f"params.`{TRIAL_PARAMS[-1]}`" in t[1], timeout=20)
    _screenshot(browser, "runs-this-sweep")
    assert "Sort: " + metric in browser.find_element(By.TAG_NAME, "body").text
    assert headers.get(f"metrics.`{metric}`") == metric
    _assert_trials_best_first(rows, trials, metric)
    _assert_params(rows, trials, headers, ("optimizer", "schedule"))
    assert missing == [], "the sweep logs peak_lr on every trial"
    _assert_params(rows, trials, headers, ["peak_lr"])


def test_lrtune_ui_prints_a_saved_view_that_shows_the_trials_columns(smoke, mlflow_ui, browser, capsys):
    parent, metric, trials = _trials(smoke)
    capsys.readouterr()
    assert main(["ui", "--tracking-uri", mlflow_ui, "--experiment", smoke.cfg["tracking"]["experiment"]]) == 0
    url = re.search(r"MLflow runs of sweep \S+: (\S+)", capsys.readouterr().out).group(1)
    assert url.startswith(f"{mlflow_ui}/#/experiments/{parent.info.experiment_id}/runs?")
    browser.get(url)
    rows, headers = _settled(browser, _table, lambda t: len(t[0]) == len(trials) and "tags.`status`" in t[1])
    _screenshot(browser, "runs-saved-view")
    _assert_trials_best_first(rows, trials, metric)
    _assert_params(rows, trials, headers, ("optimizer", "schedule", "weight_decay"))
    assert [cells.get("tags.`status`") for _, cells in rows] == ["finished"] * len(trials)
    _assert_params(rows, trials, headers, ["peak_lr"])


def test_the_parent_run_page_shows_the_best_metric_and_the_note(smoke, mlflow_ui, browser):
    parent, metric, trials = _trials(smoke)
    browser.get(f"{mlflow_ui}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
                "?workflowType=machine_learning")

    def page(d):
        return d.execute_script("""
            const note = document.querySelector('[data-testid=note-editor-preview-content]');
            const metrics = {};
            for (const table of document.querySelectorAll('[role=table]'))
                if (table.querySelector('[role=columnheader]')?.innerText.trim() === 'Metric')
                    for (const row of table.querySelectorAll('[role=row]')) {
                        const cells = [...row.querySelectorAll('[role=cell]')].map(c => c.innerText.trim());
                        if (cells.length === 2) metrics[cells[0]] = cells[1];
                    }
            return [note?.innerText.trim() ?? null, metrics];""")
    note, metrics = _settled(browser, page, lambda p: bool(p[1]))
    _screenshot(browser, "parent-run")
    best = (max if parent.data.tags["lrtune.mode"] == "max" else min)(t.data.metrics[metric] for t in trials)
    assert f"best_{metric}" in metrics, f"the parent run has no best_{metric}; its metrics: {metrics}"
    assert float(metrics[f"best_{metric}"]) == pytest.approx(best, rel=1e-6)
    assert parent.data.tags.get("mlflow.note.content", "").startswith("lrtune sweep")
    assert note and note.startswith("lrtune sweep"), f"the page shows the note {note!r}"
