"""cluster.yaml and the local-provider example pass Ray's own cluster-config schema (the launcher's
`prepare_config` + `validate_config`), and keep lrtune's rules: the MLflow server on the head bound
to a private address, the dashboard on localhost, no secrets in the file."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "cluster.yaml", ROOT / "examples" / "clusters" / "local.yaml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_passes_rays_cluster_schema(path):
    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    with pytest.raises(jsonschema.ValidationError, match="'max_worker' was unexpected"):
        validate_config(prepare_config(dict(copy.deepcopy(config), max_worker=3)))  # the check is real


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_mlflow_on_the_head_bound_privately_and_no_secrets(path):
    text = path.read_text()
    config = yaml.safe_load(text)
    head = " ".join(config["head_start_ray_commands"])
    server = re.search(r"mlflow server --host (.+?) --port (\d+)", head)
    assert server and server.group(1) not in ("0.0.0.0", "::")
    assert "--dashboard-host=127.0.0.1" in head
    assert not re.search(r"(?i)(aws_secret|secret_access_key|password\s*:|token\s*:)", text)
    assert config["file_mounts"] == {"~/lrtune": "."}
