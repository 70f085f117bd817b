"""Running a model once with forward hooks on some of its modules (hooks always removed afterwards)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def forward_hooks(pairs: Iterable[tuple[Any, Callable[..., Any]]]) -> Iterator[None]:
    """Register ``hook`` on each ``(module, hook)`` for the ``with`` block; removed even on error."""
    handles = [m.register_forward_hook(f) for m, f in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_hooked(model: Any, x: Any, pairs: Iterable[tuple[Any, Callable[..., Any]]]) -> Any:
    """``model(x)`` without gradients, with the hooks in place; returns the output."""
    import torch

    with forward_hooks(pairs), torch.no_grad():
        return model(x)


def layer_inputs(model: Any, x: Any, modules: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The (first) input tensor each named module sees when ``model(x)`` runs once, detached."""
    seen: dict[str, Any] = {}

    def keep(name: str) -> Callable[..., None]:
        return lambda _m, inp, _o: seen.__setitem__(name, inp[0].detach())

    run_hooked(model, x, [(m, keep(n)) for n, m in modules])
    return seen
