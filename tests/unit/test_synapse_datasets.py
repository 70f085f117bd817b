"""tabular_split: scikit-learn's bundled tabular data sets as device-range inputs (benchmarks/synapse_datasets.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from hwkit.compress.synapse.train import SKLEARN_TABULAR, tabular_split  # noqa: E402

SHAPES = {"iris": (150, 4, 3), "wine": (178, 13, 3), "breast_cancer": (569, 30, 2)}


@pytest.mark.parametrize("name", SKLEARN_TABULAR)
def test_tabular_split_shapes_range_and_stratification(name: str) -> None:
    n, d, k = SHAPES[name]
    xtr, ytr, xte, yte = tabular_split(name, seed=0)
    assert xtr.dtype == xte.dtype == torch.float32 and ytr.dtype == yte.dtype == torch.int64
    assert xtr.shape[1] == xte.shape[1] == d and len(xtr) == len(ytr) and len(xte) == len(yte)
    assert len(xtr) + len(xte) == n and len(xte) == pytest.approx(0.2 * n, abs=1)
    # inputs in [0, 1] like digits' pixels / 16; train features centred on 0.5 (z = 0) with std 1 / (2 * clip)
    for x in (xtr, xte):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.allclose(xtr.mean(0), torch.full((d,), 0.5), atol=0.02)
    sd = xtr.std(0)  # clipping heavy-tailed features (breast_cancer) shrinks a few of them
    assert float(sd.max()) < 1 / 6 + 0.01 and float(sd.min()) > 0.1 and abs(float(sd.median()) - 1 / 6) < 0.01
    # stratified: every class's share of the test split within one sample of its share of the whole set
    y = torch.cat([ytr, yte])
    assert sorted(set(y.tolist())) == list(range(k))
    for c in range(k):
        assert abs(int((yte == c).sum()) - len(yte) * float((y == c).float().mean())) <= 1.0


def test_tabular_split_uses_train_statistics_and_seeds() -> None:
    a, b = tabular_split("wine", seed=0), tabular_split("wine", seed=0)
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # deterministic
    c = tabular_split("wine", seed=1)
    assert not torch.equal(a[0], c[0])  # another seed, another split
    # standardised with the training split's statistics: unclipped training features have mean exactly 0.5
    # (statistics of the whole set would leave them off by ~0.01) ...
    unclipped = ((a[0] > 0) & (a[0] < 1)).all(0)
    assert int(unclipped.sum()) >= 5
    assert torch.allclose(a[0].mean(0)[unclipped], torch.full((int(unclipped.sum()),), 0.5), atol=1e-4)
    # ... and the test split is scaled with them too, so its mean is not exactly 0.5
    assert not torch.allclose(a[2].mean(0), torch.full((13,), 0.5), atol=1e-3)
    wide = tabular_split("wine", seed=0, clip=1.0)[0]
    assert float((wide == 0).float().mean() + (wide == 1).float().mean()) > 0.1  # clipping at +-1 std saturates


def test_tabular_split_rejects_unknown_data_and_bad_clip() -> None:
    with pytest.raises(ValueError, match="data set must be one of"):
        tabular_split("digits")
    with pytest.raises(ValueError, match="clip must be > 0"):
        tabular_split("iris", clip=0.0)
