"""Shared fixtures: small real Brevitas models saved in every format hwkit accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mlp_w2a2_digits.pt"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (small models: one thread is fastest, and CI has two cores);
    the previous count is restored afterwards. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_qmlp(in_features: int = 16, hidden: tuple[int, ...] = (16, 8), out: int = 4, bits: int = 2, seed: int = 0):
    """A small Brevitas MLP with non-trivial BatchNorm statistics, in eval mode."""
    import torch

    from hwkit.models.mlp import build_qmlp

    torch.manual_seed(seed)
    model = build_qmlp(in_features, list(hidden), out, weight_bits=bits, act_bits=bits)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Training-mode forwards initialise Brevitas's learned activation scales and give the
        # BatchNorms the statistics of uint8 inputs, so that every 2-bit activation level is used.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.momentum = None
        model.train()
        for _ in range(8):
            model(torch.randint(0, 256, (128, in_features), generator=gen).float())
    return model.eval()


def save_checkpoint(path: Path, model, in_features: int = 16, hidden=(16, 8), out: int = 4, bits: int = 2,
                    **extra) -> Path:
    """Save ``model`` as a hwkit checkpoint."""
    import torch

    ckpt = {
        "hwkit_checkpoint": 1,
        "arch": "qmlp",
        "arch_kwargs": {"in_features": in_features, "hidden": list(hidden), "out_features": out,
                        "weight_bits": bits, "act_bits": bits},
        "state_dict": model.state_dict(),
        "input_shape": [1, in_features],
        "input_dtype": "UINT8",
        **extra,
    }
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A 16-16-8-4 w2a2 MLP as a hwkit checkpoint."""
    d = tmp_path_factory.mktemp("models")
    return save_checkpoint(d / "tiny.pt", make_qmlp())


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, tiny_ckpt) -> tuple[Path, object]:
    """The tiny MLP compiled once for zcu104 (shared, read-only: copy it before changing it)."""
    from hwkit.api import compile_model

    out = tmp_path_factory.mktemp("build") / "zcu104"
    report = compile_model(tiny_ckpt, "zcu104", out, target_fps=2_000_000)
    return out, report


@pytest.fixture
def tiny_build_copy(tiny_build, tmp_path) -> Path:
    """A private copy of the shared build directory."""
    dst = tmp_path / "build"
    shutil.copytree(tiny_build[0], dst, symlinks=True)
    return dst
