"""The `lrtune` command line: argument parsing, exit codes, printing. Work is delegated.

Exit codes: 0 success; 1 the sweep has no result: a range test refused (its diagnosis says why)
or the task's code raised in one (both before any trial ran), or every trial failed; 2 bad input (a
config error names the key, the rule and the value, and nothing has started); 128 + the signal
that stopped a sweep: 130 SIGINT (Ctrl-C), 143 SIGTERM, 129 SIGHUP (its runs ended KILLED).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from schedules import OPTIMIZER_SPECS, OPTIMIZERS

EXIT_REFUSED, EXIT_USAGE = 1, 2


class UsageError(ValueError):
    """Bad input from the user: printed as `lrtune: error: ...` with exit code 2."""


def _range_test(args: argparse.Namespace) -> int:
    from trainables.tasks import load_task
    from trainables.workflow import task_range_test

    torch.set_num_threads(args.threads)
    task = load_task(args.task, args.data_dir)
    try:
        model_name = task.model_name(args.model)
    except ValueError as e:
        raise UsageError(f"--model: {e}") from None
    if args.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {args.optimizer!r}")
    result = task_range_test(task, model_name, args.optimizer, args.weight_decay,
                             batch_size=args.batch_size, start_lr=args.start_lr, end_lr=args.end_lr,
                             num_iter=args.num_iter, repeats=args.repeats, seed=args.seed)
    if args.plot:
        result.plot(args.plot, title=f"{args.task}/{model_name} {args.optimizer} "
                    f"wd={args.weight_decay:g}: {result.diagnosis.status}")
    s, d = result.suggestion, result.diagnosis
    if args.json:
        out = dict(task=args.task, model=model_name, optimizer=args.optimizer,
                   weight_decay=args.weight_decay, status=d.status, message=d.message,
                   suggestion=None if s is None else dict(lr=s.lr, max_lr=s.max_lr, spread=s.spread,
                                                          max_lrs=s.max_lrs),
                   lrs=result.raw_lrs, raw_losses=[_json_float(v) for v in result.raw_losses],
                   settings=result.settings, plot=args.plot)
        print(json.dumps(out, indent=1))
    elif s is not None:
        print(f"{args.task}/{model_name} {args.optimizer} weight_decay={args.weight_decay:g}: "
              f"max_lr={s.max_lr:.3g} (1-cycle max_lr, CLR upper bound), lr={s.lr:.3g} "
              f"(constant LR, CLR base_lr)" + (f", spread ±{s.spread:.2f} decades over "
                                               f"{args.repeats} repeats" if args.repeats > 1 else ""))
    else:
        print(f"range test refused ({d.status}): {d.message}")
    if args.plot and not args.json:
        print(f"plot: {args.plot}")
    return 0 if s is not None else EXIT_REFUSED


def _sweep(args: argparse.Namespace) -> int:
    from .config import load, parse

    cfg = load(args.config)  # a ConfigError (exit 2) before Ray starts
    if args.address:
        cfg = parse({**cfg.model_dump(), "ray": {"address": args.address}}, "--address")
    from .seeding import RangeTestFailed, SeedingRefused
    from .sweep import StorageFull, StoreUnwritable, SweepFailed, print_summary, run_sweep  # for a valid config

    try:
        result = run_sweep(cfg, verbose=args.verbose, resume=args.resume)
    except StoreUnwritable as e:
        print(f"lrtune: {e}. Its runs there show what the store took (some RUNNING); Tune's records under "
              f"storage_path keep the rest. Once the store can be written, `lrtune sweep {args.config} --resume` "
              f"logs what is missing, ends those runs and continues the sweep", file=sys.stderr)
        return EXIT_REFUSED
    except StorageFull as e:
        print(f"lrtune: {e}; its unfinished trials and its MLflow parent run ended FAILED. Make room there, "
              f"then `lrtune sweep {args.config} --resume` continues it", file=sys.stderr)
        return EXIT_REFUSED
    except (SeedingRefused, RangeTestFailed, SweepFailed) as e:
        print(f"lrtune: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt as e:
        import signal

        signum = getattr(e, "signum", signal.SIGINT)
        print(f"lrtune: sweep {cfg.name} stopped by {signal.Signals(signum).name}: its unfinished trials and "
              f"its MLflow parent run ended KILLED; `lrtune sweep {args.config} --resume` continues it",
              file=sys.stderr)
        return 128 + signum
    print_summary(result, cfg)
    return 0


def _export(args: argparse.Namespace) -> int:
    import yaml

    from .stores import write_atomically
    from .tracking.reader import exported_workflow, workflow_origin

    workflow, source = exported_workflow(args.tracking_uri, args.run_id)
    header = (f"# lrtune workflow exported from MLflow run {source['run_id']} ({source['run_name']}, "
              f"status {source['status']}, sweep run {source['sweep_run_id']})\n"
              f"# its final metrics: {', '.join(f'{k}={v:.4g}' for k, v in sorted(source['metrics'].items()))}\n"
              f"# re-run: lrtune train {args.output} (its MLflow run is linked to the trial and sweep in `origin`)\n")
    origin = workflow_origin(args.tracking_uri, args.run_id)
    write_atomically(args.output, header + yaml.safe_dump(dict(workflow, origin=origin), sort_keys=False))
    print(f"wrote {args.output}: {workflow['optimizer']} + {workflow['schedule']}, {workflow['epochs']} epochs "
          f"on {workflow['task']}" + (f"/{workflow['model']}" if workflow.get("model") else ""))
    return 0


def _train(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from trainables.loops import train_workflow
    from trainables.tasks import load_task
    from trainables.workflow import workflow_of

    from .config import WorkflowConfig, load

    wf = load(args.workflow, WorkflowConfig)  # ConfigError: exit 2, nothing trained
    workflow = workflow_of(wf.model_dump())
    if args.save and os.path.exists(args.save) and not (os.path.isdir(args.save) and not os.listdir(args.save)):
        raise UsageError(f"--save: {args.save} exists and is not an empty folder; nothing was trained "
                         f"(give a new path)")
    torch.set_num_threads(wf.threads)
    task = load_task(wf.task, wf.data_dir)
    try:
        if task.models:
            task.model_name(wf.model)
    except ValueError as e:
        raise UsageError(f"model: {e}") from None
    if args.save and task.train_fn is not None:
        raise UsageError(f"--save: task {task.name!r} trains with its own loop (train_fn), which keeps its "
                         f"model to itself: lrtune has no model to save; nothing was trained")
    m = task.metric_name
    from .tracking.writer import TrainRun, save_model  # MLflow (and Ray) load only for a valid workflow

    origin = wf.origin.model_dump() if wf.origin else {}
    uri = (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or origin.get("tracking_uri")
           or "sqlite:///mlflow.db")
    run = None if args.no_mlflow else TrainRun(uri, args.experiment, workflow, origin)

    def show(row):
        if run is not None:
            run.log_epoch(row)
        if not args.json:
            std = f" ± {row[m + '_std']:.4f}" if m + "_std" in row else ""
            losses = "".join(f"  {k} {row[k]:.4f}" for k in ("train_loss", "val_loss") if k in row)
            lr = f"  lr {row['lr']:.3g}" if "lr" in row else ""
            print(f"epoch {row['epoch']:>3}{losses}  {m} {row[m]:.4f}{std}{lr}", flush=True)

    notes, model_uri, saved = [], None, None
    with run or contextlib.nullcontext():
        history, model = train_workflow(task, workflow, on_epoch=show)
        if not history:
            raise UsageError(f"{args.workflow}: the task's loop reported no epoch")
        last = history[-1]
        if last["diverged"]:
            notes.append("no model logged or saved: the training diverged (its weights are no result)")
        elif model is None:
            notes.append(f"no model logged or saved: task {task.name!r} trains with its own loop (train_fn), "
                         f"which keeps its model to itself")
        else:
            if run is not None:
                model_uri = run.log_model(model, last["epoch"])
            if args.save:
                save_model(model, args.save)
                saved = args.save
        if run is not None:
            run.end("diverged" if last["diverged"] else "finished", last["epoch"])
    summary = dict(workflow=workflow, epochs_run=last["epoch"], diverged=last["diverged"],
                   **{k: last[k] for k in (m, m + "_std", "val_loss", "train_loss") if k in last},
                   mlflow_run_id=run.run_id if run else None, model_uri=model_uri, saved=saved, notes=notes)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{'diverged' if last['diverged'] else 'finished'}: {m} {last[m]:.4f} after {last['epoch']} epochs")
    if run is not None:
        print(f"MLflow run {run.run_id} in experiment {run.experiment!r}"
              + (f", under the sweep's run {run.parent}" if run.parent else "") + f" ({uri})")
    if model_uri:
        print(f"model: {model_uri} (mlflow.pytorch.load_model reads it)")
    if saved:
        print(f"saved the model to {saved} (an MLflow model folder: mlflow.pytorch.load_model reads it)")
    for note in notes:
        print(note)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import report

    report(args.tracking_uri, args.experiment, args.sweep, top=args.top, plot=not args.no_plots)
    return 0


def _ui(args: argparse.Namespace) -> int:
    import signal

    from . import ui
    from .tracking.reader import SweepView
    from .tracking.writer import show_sweep_in_view

    uri, experiment = args.tracking_uri, args.experiment
    if args.config:
        from .config import load

        cfg = load(args.config)
        uri, experiment = uri or cfg.tracking.mlflow_uri, experiment or cfg.tracking.experiment
    uri = uri or _default_uri()
    server = uri.startswith(("http://", "https://"))
    view = SweepView(uri, experiment)  # ValueError (exit 2), creating nothing, when there is no sweep
    experiment_id, run_id, name, metric, mode = view.experiment_id, view.run_id, view.name, view.metric, view.mode
    # A saved view, because no URL parameter shows columns; one per experiment, moved to the newest sweep
    show_sweep_in_view(uri, experiment_id, name, run_id, metric, mode)
    if server:
        print(f"MLflow runs of sweep {name}: {ui.runs_url(uri, experiment_id, metric, mode, run_id, ui.VIEW_ID)}")
        return 0
    port = args.port or (ui.DEFAULT_PORT if ui.port_is_free("127.0.0.1", ui.DEFAULT_PORT) else None)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # the server has its own session: end it with this one
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
    # Ctrl-C stops it even where it started with SIGINT ignored (a `cmd &` of a script without job
    # control), where Python would leave SIGINT ignored and no KeyboardInterrupt would ever come
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc, base = ui.serve(uri, port=port)
    except RuntimeError as e:
        print(f"lrtune: {e}", file=sys.stderr)
        return 1
    print(f"MLflow UI for {uri} on {base} (Ctrl-C stops it)\n"
          f"MLflow runs of sweep {name}: {ui.runs_url(base, experiment_id, metric, mode, run_id, ui.VIEW_ID)}",
          flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        ui.stop(proc)


def _json_float(v: float):
    return v if v == v and abs(v) != float("inf") else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrtune", description="LR range tests that seed "
                                "hyperparameter sweeps (Optuna + Ray Tune + MLflow).")
    sub = p.add_subparsers(dest="command", required=True)
    rt = sub.add_parser("range-test", help="run an LR range test on a built-in task and read it")
    rt.add_argument("--task", default="mnist1d",
                    help="built-in task (mnist1d, digits, synthetic, cifar10) or package.module:function")
    rt.add_argument("--data-dir", default=None, help="folder of a task's local files (cifar10)")
    rt.add_argument("--model", default=None, help="a model the task offers (default: its first)")
    rt.add_argument("--optimizer", default="adamw",
                    help=", ".join(o.name + ("" if o.decoupled else " (L2)") for o in OPTIMIZER_SPECS))
    rt.add_argument("--weight-decay", type=float, default=0.0)
    rt.add_argument("--batch-size", type=int, default=100)
    rt.add_argument("--start-lr", type=float, default=1e-7)
    rt.add_argument("--end-lr", type=float, default=10.0)
    rt.add_argument("--num-iter", type=int, default=100)
    rt.add_argument("--repeats", type=int, default=1, help="repeat over seeds to report the spread")
    rt.add_argument("--seed", type=int, default=0)
    rt.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    rt.add_argument("--plot", metavar="PNG", help="save the curve with regions and suggestion")
    rt.add_argument("--json", action="store_true", help="print the result as JSON")
    rt.set_defaults(run=_range_test)
    sw = sub.add_parser("sweep", help="run a sweep from a YAML config (see examples/)")
    sw.add_argument("config", help="YAML config, e.g. examples/mnist1d.yaml")
    sw.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                    help="Ray Tune's progress output (0 silent, 1 trial table, 2 every result)")
    sw.add_argument("--resume", action="store_true",
                    help="continue this config's newest interrupted sweep (same Ray Tune experiment, "
                         "Optuna study and MLflow parent run); finished trials are not run again")
    sw.add_argument("--address", default=None,
                    help="the Ray cluster to run on: auto (this node's) or host:port (default: the "
                         "config's ray.address, else a local Ray of the sweep's own; $RAY_ADDRESS is "
                         "not read)")
    sw.set_defaults(run=_sweep)
    ex = sub.add_parser("export", help="write a trial's workflow as a YAML that `lrtune train` re-runs")
    ex.add_argument("run_id", metavar="RUN_ID", help="the trial's MLflow run id (see `lrtune report`)")
    ex.add_argument("-o", "--output", default="workflow.yaml", help="file to write (default workflow.yaml)")
    ex.add_argument("--tracking-uri", default=_default_uri(), help="MLflow tracking URI (default: "
                    "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ex.set_defaults(run=_export)
    rp = sub.add_parser("report", help="a sweep's ranked trials from MLflow; plots logged to its parent run")
    rp.add_argument("--experiment", default=None, help="MLflow experiment (the config's "
                    "tracking.experiment; default: the one with the newest lrtune sweep)")
    rp.add_argument("--sweep", default=None, help="a sweep name or parent run id (default: the newest)")
    rp.add_argument("--top", type=int, default=10, help="rows to print (default 10)")
    rp.add_argument("--no-plots", action="store_true", help="print the table only")
    rp.add_argument("--tracking-uri", default=_default_uri(), help="MLflow tracking URI (default: "
                    "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    rp.set_defaults(run=_report)
    ui = sub.add_parser("ui", help="start the MLflow UI for a config's store and print the URL of its "
                        "newest sweep's trials (for a tracking server: the URL only)")
    ui.add_argument("config", nargs="?", help="the sweep's YAML config (its tracking.mlflow_uri and experiment)")
    ui.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the config's, else "
                    "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ui.add_argument("--experiment", default=None, help="MLflow experiment (default: the config's, else the one with the newest lrtune sweep)")
    ui.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default 5000 when free, else any)")
    ui.set_defaults(run=_ui)
    tr = sub.add_parser("train", help="train one exported workflow with the plain loop (no Ray)")
    tr.add_argument("workflow", help="a workflow YAML written by `lrtune export`")
    tr.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    tr.add_argument("--save", metavar="PATH", help="write the trained model there, as an MLflow model "
                    "folder (mlflow.pytorch.load_model(PATH) reads it); PATH must be new or an empty folder")
    tr.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                    "else the exported workflow's origin's, else sqlite:///mlflow.db)")
    tr.add_argument("--experiment", default=None, help="MLflow experiment (default: the sweep's, for an "
                    "exported workflow; else lrtune)")
    tr.add_argument("--no-mlflow", action="store_true", help="train without an MLflow run")
    tr.set_defaults(run=_train)
    return p


def _default_uri() -> str:
    import os

    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ValueError) as e:
        p.exit(EXIT_USAGE, f"lrtune: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
