"""The `lrtune` command line: argument parsing, exit codes, printing. Work is delegated.

Exit codes: 0 success; 1 a range test refused (its diagnosis says why; for a sweep, before any
trial ran); 2 bad input (a config
error names the key, the rule and the value, and nothing has started).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

EXIT_REFUSED, EXIT_USAGE = 1, 2


class UsageError(ValueError):
    """Bad input from the user: printed as `lrtune: error: ...` with exit code 2."""


def _range_test(args: argparse.Namespace) -> int:
    from trainables.tasks import load_task
    from trainables.workflow import OPTIMIZERS, task_range_test

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
    from .config import load

    cfg = load(args.config)  # a ConfigError (exit 2) before Ray starts
    from .seeding import SeedingRefused
    from .sweep import print_summary, run_sweep  # Ray and MLflow load only for a valid config

    try:
        result = run_sweep(cfg, verbose=args.verbose, resume=args.resume)
    except SeedingRefused as e:
        print(f"lrtune: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print_summary(result, cfg)
    return 0


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
    rt.add_argument("--optimizer", default="adamw", help="adamw, sgdw, adam (L2), sgd (L2)")
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
    sw.set_defaults(run=_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ValueError) as e:
        p.exit(EXIT_USAGE, f"lrtune: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
