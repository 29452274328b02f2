"""The entry script of `ray submit`: a sweep on a running Ray cluster.

    ray submit cluster.yaml tuning/submit.py -- examples/mnist1d.yaml [--resume]

`ray submit` copies this file to the head node and runs it there with the arguments after `--`.
It connects to the cluster (`ray.init(address="auto")`, or --address), points MLflow at the
tracking server that cluster.yaml starts on the head (http://<head private IP>:5000) unless the
config or --tracking-uri names one, and otherwise runs exactly what `lrtune sweep` runs (the same
validation, preflight, range tests, trials, MLflow runs and exit codes). Trial checkpoints go to
the config's `storage_path`, which on a multi-node cluster must be shared (NFS or an s3:// URI).
Imports are absolute: on the head, lrtune is installed (cluster.yaml's setup_commands).
"""

from __future__ import annotations

import argparse
import os
import sys

MLFLOW_PORT = 5000  # cluster.yaml's head_start_ray_commands


def head_tracking_uri(port: int = MLFLOW_PORT) -> str:
    import ray

    return f"http://{ray.util.get_node_ip_address()}:{port}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="submit.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a sweep config, e.g. examples/mnist1d.yaml")
    ap.add_argument("--resume", action="store_true", help="continue this config's interrupted sweep")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"),
                    help="the Ray cluster (default: $RAY_ADDRESS, else auto: the one this node is in)")
    ap.add_argument("--tracking-uri", default=None,
                    help=f"MLflow tracking URI (default: the config's if it is a server, else "
                         f"http://<this node's IP>:{MLFLOW_PORT})")
    ap.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = ap.parse_args(argv)

    from tuning.cli import EXIT_REFUSED, EXIT_USAGE
    from tuning.config import ConfigError, load

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"submit.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    from tuning.seeding import SeedingRefused
    from tuning.sweep import init_ray, print_summary, run_sweep

    init_ray(args.address)
    uri = args.tracking_uri or (cfg.tracking.mlflow_uri if cfg.tracking.mlflow_uri.startswith(("http://", "https://"))
                                else head_tracking_uri())
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"mlflow_uri": uri})})
    print(f"Ray cluster: {args.address}; MLflow tracking server: {uri}", flush=True)
    try:
        result = run_sweep(cfg, verbose=args.verbose, resume=args.resume)
    except ConfigError as e:  # preflight: tracking server, storage, resources
        print(f"submit.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SeedingRefused as e:
        print(f"submit.py: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print_summary(result, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
