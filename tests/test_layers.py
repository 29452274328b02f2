"""The import layers: `schedules` is torch only (no Ray, Optuna, MLflow or pydantic), `trainables`
adds Ray but no Optuna or MLflow. Each package and every module in it is imported in a fresh
Python, which then lists the top-level packages it loaded."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package,banned", [
    ("schedules", {"ray", "optuna", "mlflow", "pydantic"}),
    ("trainables", {"optuna", "mlflow"}),
])
def test_a_layer_imports_nothing_above_it(package, banned):
    modules = [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / package)])]
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except ImportError as e:  # an optional extra (lightning) not installed\n"
            "        if e.name and e.name.split('.')[0] in ('lightning', 'pytorch_lightning'):\n"
            "            continue\n"
            "        raise\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert len(modules) > 1 and not loaded & banned, f"{package} loads {sorted(loaded & banned)}"
