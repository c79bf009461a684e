"""Declared ranges of the numeric settings: every numeric flag of the commands and every numeric config field has one.

A :class:`Range` says which numbers a setting takes: the kind (``int`` or ``float``; floats must be finite), a lower
and an upper bound, each inclusive (``min`` / ``max``) or exclusive (``above`` / ``below``), and the special values
outside them that mean something (``also``: ``train.max_steps=-1``, no limit). It is checked in two places only:

* a command's flag: its argparse ``type`` (:func:`talkingface.cli_support.number`), so a bad value stops the command
  before any work with ``error: --flag: must be ...`` and exit status 2;
* a config field: the schema's ``problems()`` (:func:`range_problems` over the ``RANGES`` table beside each schema),
  so a bad value is refused when the config loads, naming the key.

``tests/test_ranges.py`` walks every parser and every schema dataclass: a numeric flag or field without a declared
range fails it. This module imports nothing from the package (every layer may use it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SEED", "Number", "Range", "numeric_fields", "range_problems"]

Number = int | float


def _fmt(value: object) -> str:
    """``4096``, ``0.5``, ``1e12``, ``1e-5``, ``nan``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    text = f"{float(value):g}"
    if "e" in text:  # 1e+12 -> 1e12, 1e-05 -> 1e-5
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


@dataclass(frozen=True)
class Range:
    """The numbers a setting takes: ``kind`` (int or float, finite), one lower bound (``min`` inclusive or ``above``
    exclusive), one upper bound (``max`` inclusive or ``below`` exclusive), and special values ``also`` outside them
    (e.g. ``-1``: no limit)."""

    kind: type
    min: Number | None = None
    max: Number | None = None
    above: Number | None = None
    below: Number | None = None
    also: tuple[Number, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise TypeError(f"Range kind must be int or float, got {self.kind!r}")
        if self.min is not None and self.above is not None or self.max is not None and self.below is not None:
            raise TypeError("a Range has one lower bound (min or above) and one upper bound (max or below)")

    @property
    def lower(self) -> Number | None:
        return self.min if self.min is not None else self.above

    @property
    def upper(self) -> Number | None:
        return self.max if self.max is not None else self.below

    @property
    def bounded(self) -> bool:
        """Both bounds given and finite (every declared range should be: a huge value is refused too)."""
        return all(b is not None and math.isfinite(b) for b in (self.lower, self.upper))

    def _lower_words(self) -> str:
        if self.above == 0 or (self.kind is int and self.min == 1):
            return "positive"
        if self.above is not None:
            return f"more than {_fmt(self.above)}"
        return f"at least {_fmt(self.min)}"

    def _upper_words(self) -> str:
        return f"less than {_fmt(self.below)}" if self.below is not None else f"at most {_fmt(self.max)}"

    def describe(self) -> str:
        """The range in words, for help texts and docs: ``1 to 100``, ``positive, at most 1e5``, ``-1, or 1 to
        1e9``."""
        if self.min is not None and self.max is not None:
            text = f"{_fmt(self.min)} to {_fmt(self.max)}"
        else:
            parts = [
                self._lower_words() if self.lower is not None else "",
                self._upper_words() if self.upper is not None else "",
            ]
            text = ", ".join(p for p in parts if p) or "any finite number"
        return ", ".join([*(_fmt(v) for v in self.also), f"or {text}" if self.also else text])

    def problem(self, value: object) -> str | None:
        """``"must be ..., got X"`` when ``value`` is outside the range (or not a finite number of its kind), else
        None. Only the bound that is broken is named."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be {'a whole number' if self.kind is int else 'a number'}, got {_fmt(value)}"
        if not math.isfinite(value):
            return f"must be a finite number, got {_fmt(value)}"
        if self.kind is int and not float(value).is_integer():
            return f"must be a whole number, got {_fmt(value)}"
        if value in self.also:
            return None
        special = "".join(f"{_fmt(v)} or " for v in self.also)
        if (self.min is not None and value < self.min) or (self.above is not None and value <= self.above):
            return f"must be {special}{self._lower_words()}, got {_fmt(value)}"
        if (self.max is not None and value > self.max) or (self.below is not None and value >= self.below):
            return f"must be {special}{self._upper_words()}, got {_fmt(value)}"
        return None

    def parse(self, text: str) -> Number:
        """The number ``text`` spells, in range; raises ``ValueError`` with the problem (``invalid int value: 'x'``,
        ``must be at most 4096, got 20000``)."""
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise ValueError(f"invalid {self.kind.__name__} value: {text!r}") from None
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def __contains__(self, value: object) -> bool:
        return self.problem(value) is None


#: Seeds: NumPy's and Lightning's ``seed_everything`` take 0 .. 2**32 - 1.
SEED = Range(int, min=0, max=2**32 - 1)


def _field(root: object, key: str) -> tuple[object, dataclasses.Field[Any] | None]:
    """The value of the dotted ``key`` under the dataclass ``root``, and its dataclass field."""
    node, field = root, None
    for name in key.split("."):
        field = next((f for f in dataclasses.fields(node) if f.name == name), None)  # type: ignore[arg-type]
        if field is None:
            raise KeyError(f"{key}: no such config field")
        node = getattr(node, name)
    return node, field


def range_problems(config: object, ranges: Mapping[str, Range]) -> list[str]:
    """``"<key> must be ..., got X"`` for every field of the dataclass ``config`` outside its declared range
    (``ranges``: dotted key -> :class:`Range`); a list field is checked item by item (``key[i]``), a null value
    passes (the schema's type says whether the field may be null, and the message says so)."""
    problems = []
    for key, rng in ranges.items():
        value, field = _field(config, key)
        if value is None:
            continue
        nullable = field is not None and "None" in str(field.type)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            problem = rng.problem(item)
            if problem is not None:
                name = key if index is None else f"{key}[{index}]"
                problems.append(f"{name} {problem.replace('must be ', 'must be null or ', 1) if nullable else problem}")
    return problems


def _numeric(hint: object) -> bool:
    """int / float (not bool), optional or as the items of a list."""
    if hint in (int, float):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and _numeric(rest[0])
    return origin in (list, tuple) and len(args) >= 1 and all(_numeric(a) for a in args if a is not Ellipsis)


def numeric_fields(schema: type, prefix: str = "") -> Iterator[str]:
    """The dotted keys of every numeric field (int, float, optional or list of them) of the dataclass ``schema`` and
    of the dataclasses it nests, in order."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hint):
            yield from numeric_fields(hint, f"{key}.")  # type: ignore[arg-type]
        elif _numeric(hint):
            yield key
