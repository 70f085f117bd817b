"""Argument types shared by the hwkit subcommands (argparse turns their errors into one usage line)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def shape(text: str) -> tuple[int, ...]:
    """``1,64`` (or ``1x64``) -> (1, 64)."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape like 1,64") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive integers")
    return dims


def json_object(text: str) -> tuple[tuple[str, Any], ...]:
    """A JSON object as sorted items (hashable, as CompileSettings.arch_kwargs wants)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return tuple(sorted(obj.items()))


def positive(text: str) -> float:
    """A number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v
