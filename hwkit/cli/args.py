"""Argument types shared by the hwkit subcommands (argparse turns their errors into one usage line, exit 2).

Every number from the command line is checked here, where it enters: its type, that it is finite
(``nan``, ``inf`` are refused) and its range. The error names the flag (argparse adds it).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any


def _number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}"
    assert hi is not None
    return f"{'<' if hi_open else '<='} {_fmt(hi)}"


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float within [lo, hi] (``lo_open``/``hi_open`` exclude the bound)."""
    def parse(text: str) -> float:
        v = _number(text)
        if (lo is not None and (v < lo or (lo_open and v == lo))) or \
                (hi is not None and (v > hi or (hi_open and v == hi))):
            raise argparse.ArgumentTypeError(f"must be {_interval(lo, hi, lo_open, hi_open)}, got {text}")
        return v

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer within [lo, hi] (``1e3`` is refused: counts are written as integers)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {_interval(lo, hi, False, False)}, got {text}")
        return v

    parse.__name__ = "integer"
    return parse


def choice_upper(names: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse type: one of ``names``, case-insensitive, returned upper-case."""
    def parse(text: str) -> str:
        if text.upper() not in names:
            raise argparse.ArgumentTypeError(f"'{text}' is not one of {', '.join(names)}")
        return text.upper()

    parse.__name__ = "choice"
    return parse


MAX_DIM = 1 << 24
"""Largest accepted dimension of an ``--input-shape`` (16 Mi elements per axis)."""


def shape(text: str) -> tuple[int, ...]:
    """``1,64`` (or ``1x64``) -> (1, 64)."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape like 1,64") from None
    if not dims or any(d <= 0 or d > MAX_DIM for d in dims):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive integers (each <= {MAX_DIM})")
    return dims


def json_object(text: str) -> tuple[tuple[str, Any], ...]:
    """A JSON object as sorted items (hashable, as CompileSettings.arch_kwargs wants)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return tuple(sorted(obj.items()))


def positive(text: str) -> float:
    """A finite number > 0."""
    return number(0, lo_open=True)(text)



def finn_dtype(text: str) -> str:
    """A FINN/QONNX data type name (UINT8, INT4, BIPOLAR, FLOAT32, FIXED<8,4> ...), upper-cased."""
    from hwkit.config import is_finn_dtype

    if not is_finn_dtype(text.upper()):
        raise argparse.ArgumentTypeError(f"'{text}' is not a FINN data type (e.g. UINT8, INT8, BIPOLAR, FLOAT32)")
    return text.upper()
