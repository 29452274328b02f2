"""The MLflow UI of a sweep: the URL that opens its trials, and `mlflow ui` as a subprocess.

No MLflow import: URLs and a process. What MLflow 3.17's runs page reads (its JS bundle, checked in
a browser by tests/tuning/test_browser.py): the route `#/experiments/<id>/runs`; `workflowType`
(`machine_learning` opens the training runs, not the GenAI view a fresh browser starts in);
`searchFilter`, `orderByKey` (`metrics.`name``), `orderByAsc`. The visible columns are no URL
parameter: MLflow keeps them per browser (localStorage) or in a saved view, an experiment tag
`mlflow.sharedViewState.<id>` that `viewStateShareKey=<id>` opens, columns included. A URL with any
of the search parameters ignores the saved view, so the view holds the search too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

DEFAULT_PORT = 5000  # `mlflow ui`'s own, so that a printed URL opens in either
VIEW_ID = "lrtune"  # the saved view `lrtune ui` points at the newest sweep, one per experiment
PARAM_COLUMNS = ("peak_lr", "optimizer", "schedule", "weight_decay")
TAG_COLUMNS = ("status",)


def runs_view(metric: str, mode: str, parent_run_id: str | None = None) -> dict:
    """The trials' search and columns, as MLflow's runs page state: the sweep's trials (a sweep's
    parent and range tests are left out), best first, with the metric and the trial's choices."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
    where = "tags.`lrtune.kind` = 'trial'"
    if parent_run_id:
        where += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    columns = [f"metrics.`{metric}`", *(f"params.`{p}`" for p in PARAM_COLUMNS),
               *(f"tags.`{t}`" for t in TAG_COLUMNS)]
    return dict(searchFilter=where, orderByKey=f"metrics.`{metric}`", orderByAsc=mode == "min",
                selectedColumns=columns)


def runs_url(base_url: str, experiment_id: str, metric: str, mode: str, parent_run_id: str | None = None,
             view_id: str | None = None) -> str:
    """The URL of the experiment's training runs, filtered to the trials and sorted by the metric
    (MLflow's default columns). With `view_id`, that of the saved view `runs_view` describes
    (tracking.writer.save_runs_view), which shows the trials' columns too."""
    view = runs_view(metric, mode, parent_run_id)
    query = dict(workflowType="machine_learning")
    if view_id:
        query["viewStateShareKey"] = view_id
    else:
        query.update(searchFilter=view["searchFilter"], orderByKey=view["orderByKey"],
                     orderByAsc=str(view["orderByAsc"]).lower())
    return (f"{base_url.rstrip('/')}/#/experiments/{urllib.parse.quote(str(experiment_id))}/runs?"
            + urllib.parse.urlencode(query, quote_via=urllib.parse.quote))


def base_url(tracking_uri: str) -> str:
    """Where the UI of a store is: a tracking server's own address, else `lrtune ui`'s default."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{DEFAULT_PORT}"


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(tracking_uri: str, host: str = "127.0.0.1", port: int | None = None,
          timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `mlflow ui` for a store (a free port when `port` is None) and wait until it answers
    /health. Returns the process (its own process group: `stop` ends the server's workers too) and
    its base URL. The runs' artifacts resolve as they are: lrtune's experiments keep them beside a
    sqlite store under absolute paths (`tracking.store.artifact_location`: `<its folder>/mlruns/...`);
    `--default-artifact-root` places those of experiments made in the UI there too. RuntimeError, with the server's last output, when it
    does not come up."""
    if tracking_uri.startswith(("http://", "https://")):
        raise ValueError(f"tracking_uri: {tracking_uri} is a tracking server, which serves its own UI")
    if port is None:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host,
           "--port", str(port), "--workers", "1"]
    if tracking_uri.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(tracking_uri[len("sqlite:///"):]))
        cmd += ["--default-artifact-root", os.path.join(folder, "mlruns")]
    log = tempfile.TemporaryFile()  # a pipe nobody reads would fill with access lines and stall it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                code = proc.poll()
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
                raise RuntimeError(f"mlflow ui on {url} for {tracking_uri} did not come up ("
                                   + (f"it exited with code {code}" if code is not None else f"{timeout:.0f} s")
                                   + "); its last output:\n  " + "\n  ".join(tail))
            time.sleep(0.5)
    except BaseException:  # also Ctrl-C while it starts: no server is left behind
        stop(proc)
        raise
    finally:
        log.close()  # the server keeps its own handle


def stop(proc: subprocess.Popen) -> None:
    """End a server `serve` started, with its worker processes (its process group)."""
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
