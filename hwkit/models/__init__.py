"""Architectures hwkit can rebuild from a checkpoint by name, without unpickling code.

A hwkit checkpoint names one of these; a user's own architecture comes in through ``--arch
module:callable`` (an explicit choice to run that code).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from hwkit.errors import ModelLoadError

ARCHS: dict[str, str] = {
    "qmlp": "hwkit.models.mlp:build_qmlp",
    "cqmlp": "hwkit.compress.cqmlp.model:build_cqmlp",
    "mlp": "hwkit.models.floatnets:build_mlp",
    "cnn": "hwkit.models.floatnets:build_cnn",
    "rescnn": "hwkit.models.floatnets:build_rescnn",
    "quantized": "hwkit.compress.quantize.recipe:rebuild",
    "encoder": "hwkit.models.encoder:build_encoder",
}


def ensure_cwd_importable() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does, so ``--arch mymodule:fn``
    finds ``./mymodule.py``."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import(ref: str, what: str) -> Callable[..., Any]:
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ModelLoadError(f"{what} '{ref}' must look like 'package.module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelLoadError(f"{what} '{ref}': cannot import module '{mod_name}' ({exc})") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ModelLoadError(f"{what} '{ref}': module '{mod_name}' has no callable '{attr}'")
    return fn


def builder(name: str) -> Callable[..., Any]:
    """The builder registered under ``name`` (names in checkpoints are looked up only here)."""
    if name not in ARCHS:
        raise ModelLoadError(f"unknown architecture '{name}' in checkpoint; known: {', '.join(sorted(ARCHS))}")
    return _import(ARCHS[name], "architecture")


def user_builder(ref: str) -> Callable[..., Any]:
    """A builder the user named on the command line (``--arch module:callable``).

    The module is looked up on ``sys.path`` with the current directory first (as ``python -m`` does).
    """
    ensure_cwd_importable()
    return _import(ref, "--arch")
