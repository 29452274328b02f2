"""Run by test_node_loss.py in its own process (a process holds one Ray connection, and the test
session already has one): a head and two worker nodes on this machine (ray.cluster_utils.Cluster),
a sweep into an MLflow server, one worker node removed once a trial has reported its second epoch.
Prints one JSON line: what the sweep returned and what was removed when."""

import json
import sys
import threading
import time
from pathlib import Path

from tests.tuning.sweeps import last_results


def main(config_path: str, results: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from tuning.config import load
    from tuning.sweep import init_ray, run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    init_ray(cluster.address)
    removed = {}

    def remove_when_a_trial_is_midway():
        deadline = time.time() + 240
        while time.time() < deadline and not removed:
            for trial, last in last_results(Path(results)).items():
                if last.get("epoch", 0) >= 2:
                    cluster.remove_node(workers[1])
                    removed.update(at=time.time(), after_trial=trial.name)
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_when_a_trial_is_midway, daemon=True)
    watcher.start()
    result = run_sweep(load(config_path), verbose=0)
    watcher.join(timeout=1)
    out = dict(removed=removed, alive_nodes=sum(n["Alive"] for n in ray.nodes()),
               trials=[dict(trial_id=t["trial_id"], epoch=t["result"].get("epoch"), status=t["result"].get("status"),
                            since_restore=t["result"].get("iterations_since_restore"), error=t["error"],
                            run_id=t["run_id"]) for t in result.trials])
    print("NODE_LOSS " + json.dumps(out), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])

