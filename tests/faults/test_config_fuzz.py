"""Fuzzing the config loader: the shipped example configs, mutated (values of every YAML type at
random keys, keys deleted and added, deep nesting, raw text and byte edits), each either load into
a SweepConfig or raise a ConfigError that names the file and, for a value, its key; nothing else
escapes `tuning.config.load`, and no message is long."""

import copy
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tuning.config import ConfigError, SweepConfig, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (*ROOT.glob("examples/*.yaml"), *ROOT.glob("examples/tasks/*.yaml")))
DOCS = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, for speed
# 3000 documents take ~15 s: a lane of their own, with the end-to-end tests (tests/conftest.py)
pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _schema_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _schema_paths(field.annotation, f"{prefix}{name}.")
    return out


PATHS = _schema_paths(SweepConfig)

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([-1, 0, 1, 2**32 - 1, 2**32, 2**63, 10**30, 10**400]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 1e23]),
    st.text(max_size=30), st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["", "'", '"', "o'brien", "a/b", "..", "sqlite:///x.db", "postgres://u@h/db",
                     "mysql+pymysql://u@h/db", "http://[::1", "databricks", "file:///tmp/x", "adamw",
                     "one_cycle", "digits", "x:y", "a.b:c", ":", "nan", ".inf", "1e23", "~", "yes"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "'", "\n"]), st.sampled_from([41, 300, 5000])),
)
KEYS = st.one_of(st.text(max_size=10), st.integers(), st.booleans())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)


def _set(doc: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for p in parents:
        if not isinstance(doc.get(p), dict):
            doc[p] = {}
        doc = doc[p]
    doc[last] = value


def _delete(doc: dict, path: str) -> None:
    *parents, last = path.split(".")
    for p in parents:
        doc = doc.get(p)
        if not isinstance(doc, dict):
            return
    doc.pop(last, None)


def _nest(value, depth: int, as_dict: bool):
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


MUTATION = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), VALUES),
    st.tuples(st.just("set"), st.sampled_from(PATHS).map(lambda p: p + ".extra"), VALUES),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("set"), st.text(min_size=1, max_size=80), VALUES),  # an unknown key
    st.tuples(st.just("nest"), st.sampled_from(PATHS), st.tuples(st.integers(1, 60), st.booleans())),
)


@st.composite
def documents(draw) -> str:
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    for op, path, arg in draw(st.lists(MUTATION, min_size=1, max_size=4)):
        if op == "set":
            _set(doc, path, arg)
        elif op == "delete":
            _delete(doc, path)
        else:
            _set(doc, path, _nest(1, *arg))
    return yaml.dump(doc, Dumper=DUMPER, allow_unicode=draw(st.booleans()), sort_keys=False)


SNIPPETS = st.sampled_from([
    "&a ", "*a", "*nope", "!!int x", "!!float y", "!!binary @@", "!!timestamp 2020-13-45", "!!python/object:os.system",
    "<<: *a", "? ", "- ", ": ", "{", "}", "[", "]", "'", '"', "\t", "%YAML 1.1\n", "---\n", "...\n", "\x00",
    "\ufeff", "|\n", ">\n", "#", "\\", "\r", "\u2028", "[" * 50, "- " * 40, "a: &x [*x]\n", "1" * 5000,
    "[" * 3000 + "]" * 3000, "{a: " * 2000,  # deep enough for PyYAML's composer to exhaust the stack
])


# a lone byte that never starts a character, a truncated character, a surrogate, a 5-byte form
BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])


@st.composite
def raw_documents(draw) -> bytes:
    data = yaml.dump(draw(st.sampled_from(DOCS)), Dumper=DUMPER, sort_keys=False).encode()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["truncate", "bytes", "snippet", "replace", "bad_utf8"]))
        if edit == "truncate":
            data = data[:i]
        elif edit == "bytes":
            data = data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
        elif edit == "snippet":
            data = data[:i] + draw(SNIPPETS).encode() + data[i:]
        elif edit == "replace":
            data = data[:i] + draw(st.binary(max_size=4)) + data[i + draw(st.integers(1, 20)):]
        else:
            data = data[:i] + draw(BAD_UTF8) + data[i:]
    return data


def _assert_names_a_key(line: str) -> None:
    """`line` ('key: rule (got value)') names a key of the schema, or an unknown key as one."""
    key = line.partition(": ")[0]
    model: type[BaseModel] | None = SweepConfig
    for part in key.split("."):
        if model is None:  # below a field that is not a section: list indexes, union members
            return
        field = model.model_fields.get(part)
        if field is None:
            assert "unknown key" in line or "Keys should be strings" in line, line
            return
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


_DIR = tempfile.TemporaryDirectory(prefix="lrtune-fuzz-")


def _check(data: bytes) -> None:
    path = Path(_DIR.name) / "sweep.yaml"
    path.write_bytes(data)
    try:
        cfg = load(path)
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith(f"{path}: "), msg
        assert len(msg) < 2000, msg
        if ": invalid config:\n" in msg:
            lines = msg.split("\n")[1:]
            assert lines, msg
            for line in lines:
                if not line.startswith("  (and "):
                    _assert_names_a_key(line.strip())
        return
    assert isinstance(cfg, SweepConfig)


@FUZZ
@given(documents())
def test_mutated_configs_load_or_raise_a_config_error_naming_the_key(text):
    _check(text.encode())


@FUZZ
@given(raw_documents())
def test_mutated_yaml_text_loads_or_raises_a_config_error_naming_the_file(data):
    _check(data)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_load(path):
    assert isinstance(load(path), SweepConfig)
