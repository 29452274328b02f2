"""Argument checks in torch's style: the message names the argument, the rule and the value."""

from __future__ import annotations

import math
from numbers import Integral, Real


def require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"Expected {name} {rule}, but got {value!r}")


def positive_int(name: str, value: object) -> None:
    require(isinstance(value, Integral) and not isinstance(value, bool) and value > 0,
            name, "to be a positive integer", value)


def positive(name: str, value: object) -> None:
    require(isinstance(value, Real) and math.isfinite(value) and value > 0,
            name, "to be a positive finite number", value)


def non_negative(name: str, value: object) -> None:
    require(isinstance(value, Real) and math.isfinite(value) and value >= 0,
            name, "to be a non-negative finite number", value)


def in_range(name: str, value: object, lo: float, hi: float, *, closed: str = "[]") -> None:
    ok = isinstance(value, Real) and math.isfinite(value)
    if ok:
        ok = (value >= lo if closed[0] == "[" else value > lo) and (value <= hi if closed[1] == "]" else value < hi)
    require(ok, name, f"in {closed[0]}{lo}, {hi}{closed[1]}", value)


def one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    require(value in allowed, name, f"to be one of {', '.join(map(repr, allowed))}", value)
