"""The one registry that resolves pass names used in flow files."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from hwkit.artifact import Artifact
from hwkit.config import Context
from hwkit.errors import FlowError

PassFn = Callable[[Artifact, Context], Artifact]

# Modules whose import registers passes. They import heavy toolchains only inside pass bodies.
_PASS_MODULES = ("hwkit.export.qonnx", "hwkit.backends.finn.passes", "hwkit.backends.finn.recipes",
                 "hwkit.backends.finn.transformer",
                 "hwkit.backends.finn.power", "hwkit.verify", "hwkit.export.onnx",
                 "hwkit.backends.ort", "hwkit.backends.analog",
                 "hwkit.compress.amp.run", "hwkit.compress.shiftadd.run",
                 "hwkit.compress.quantize.run")


@dataclass(frozen=True)
class PassSpec:
    """A registered pass."""

    name: str
    """Name used in flow files."""
    fn: PassFn
    """The pure function (artifact, context) -> artifact."""
    uses: tuple[str, ...] | None = None
    """CompileSettings fields (and "board") that enter its cache key; None: all of them."""
    doc: str = ""
    """One line for ``hwkit flows``."""


_REGISTRY: dict[str, PassSpec] = {}
_FACTORIES: dict[str, Callable[[str], PassSpec | None]] = {}
_loaded = False


def register(name: str, uses: tuple[str, ...] | None = None) -> Callable[[PassFn], PassFn]:
    """Decorator: register ``fn`` as pass ``name``."""

    def deco(fn: PassFn) -> PassFn:
        if name in _REGISTRY:
            raise RuntimeError(f"pass '{name}' registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PassSpec(name, fn, uses, doc[0] if doc else "")
        return fn

    return deco


def register_factory(prefix: str, factory: Callable[[str], PassSpec | None]) -> None:
    """Resolve every name starting with ``prefix`` through ``factory`` (e.g. ``finn.<step>``)."""
    _FACTORIES[prefix] = factory


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in _PASS_MODULES:
            importlib.import_module(mod)
        _loaded = True


def resolve(name: str) -> PassSpec:
    """The pass called ``name``; a clear error naming it when there is none."""
    _load()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix, factory in _FACTORIES.items():
        if name.startswith(prefix):
            spec = factory(name)
            if spec is not None:
                return spec
    raise FlowError(f"unknown pass '{name}'; registered passes: {', '.join(sorted(_REGISTRY))}, finn.<step>")


def from_function(fn: PassFn, name: str | None = None) -> PassSpec:
    """Wrap a Python function given by an API caller as a pass (never cached across processes)."""
    return PassSpec(name or fn.__name__, fn, None, (fn.__doc__ or "").strip())
