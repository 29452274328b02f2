"""The import layers: `schedules` is torch only (no Ray, Optuna, MLflow or pydantic), `trainables`
adds Ray but no Optuna or MLflow. Each package and every module in it is imported, lowest layer
first, in a fresh Python, which lists the top-level packages loaded after each layer."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh Python importing every module: torch, Ray and Lightning (~10 s)

ROOT = Path(__file__).resolve().parents[1]


LAYERS = {"schedules": {"ray", "optuna", "mlflow", "pydantic"}, "trainables": {"optuna", "mlflow"}}


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    """The top-level packages loaded once each layer (in the order above: a layer may load the ones
    below it) and every module in it is imported; one fresh Python for all, since each import of
    torch and Ray costs seconds."""
    modules = {p: [p] + [f"{p}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / p)])] for p in LAYERS}
    code = ("import importlib, json, sys\n"
            "loaded = {}\n"
            f"for package, modules in {modules!r}.items():\n"
            "    for m in modules:\n"
            "        try:\n"
            "            importlib.import_module(m)\n"
            "        except ImportError as e:  # an optional extra (lightning) not installed\n"
            "            if e.name and e.name.split('.')[0] in ('lightning', 'pytorch_lightning'):\n"
            "                continue\n"
            "            raise\n"
            "    loaded[package] = sorted({n.split('.')[0] for n in sys.modules})\n"
            "print(json.dumps(loaded))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(len(m) > 1 for m in modules.values()), modules
    return {p: set(names) for p, names in json.loads(done.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.parametrize("package", list(LAYERS))
def test_a_layer_imports_nothing_above_it(package, loaded):
    banned = LAYERS[package]
    assert not loaded[package] & banned, f"{package} loads {sorted(loaded[package] & banned)}"
