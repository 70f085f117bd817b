"""Calibration / evaluation data for the compression methods (``--calib``), as fixed, seeded splits.

Accepted specs:

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 labelled images, values 0..16), stratified
  60/20/20 into calib(train)/val/test;
* ``data.npz`` with array ``x`` (inputs) and optionally ``y`` (integer labels);
* ``inputs.npy`` (inputs) with optional ``labels`` (a second .npy);
* a folder of images (PNG/JPEG/BMP/PGM): one sub-folder per class gives labels (sorted names are
  class 0, 1, ...), images directly in the folder are unlabelled; read as greyscale or RGB
  (``image_mode``), scaled to 0..1, resized to ``image_size`` when given;
* ``package.module:function``: a callable returning a DataLoader (or any iterable of ``x`` or
  ``(x, y)`` batches); up to ``max_samples`` samples are taken from it.

Labelled data is shuffled once with the seed and split 60/20/20 (calib/val/test); unlabelled data
75/25 (calib/val), with no test split (so no accuracy figure, only output agreement).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class SplitData:
    """Fixed, seeded splits: calib (scoring, calibration, QAT), val (choices), test (accuracy; labels only)."""

    calib_x: Any
    calib_y: Any
    val_x: Any
    val_y: Any
    test_x: Any
    test_y: Any
    source: str
    """Where the data came from, for the report."""

    @property
    def labelled(self) -> bool:
        """True when the splits carry labels."""
        return self.calib_y is not None


def _split(x: Any, y: Any, seed: int, source: str) -> SplitData:
    import numpy as np
    import torch

    if len(x) < 4:
        raise InputError(f"{source}: {len(x)} samples; calibration needs at least 4")
    if y is not None and len(y) != len(x):
        raise InputError(f"{source}: {len(y)} labels for {len(x)} samples")
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{source}: samples must be numbers, got {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{source}: holds {int((~np.isfinite(arr)).sum())} non-finite values (NaN/Inf)")
    perm = np.random.default_rng(seed).permutation(len(x))
    xt = torch.as_tensor(np.asarray(x)[perm], dtype=torch.float32)
    yt = None if y is None else torch.as_tensor(np.asarray(y)[perm], dtype=torch.long)
    n = len(xt)
    a, b = (int(n * 0.6), int(n * 0.8)) if yt is not None else (int(n * 0.75), n)

    def part(t: Any, i: int, j: int) -> Any:
        return None if t is None else t[i:j]

    desc = f"{source} ({n} samples{', labelled' if yt is not None else ', unlabelled'}, seed {seed})"
    return SplitData(xt[:a], part(yt, 0, a), xt[a:b], part(yt, a, b), part(xt, b, n) if yt is not None else None,
                     part(yt, b, n), desc)


def _npz(path: Path) -> tuple[Any, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise InputError(f"--calib {path}: .npz needs an array 'x' (inputs) and optionally 'y' (labels); "
                                 f"it has {', '.join(z.files) or 'nothing'}")
            return z["x"], (z["y"] if "y" in z.files else None)
    except (OSError, ValueError) as exc:
        raise InputError(f"--calib {path}: cannot read ({exc})") from None


def _images(folder: Path, mode: str, size: tuple[int, int] | None) -> tuple[Any, Any]:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def files(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    items: list[tuple[Path, int | None]] = (
        [(p, i) for i, d in enumerate(classes) for p in files(d)] if classes else [(p, None) for p in files(folder)])
    if not items:
        raise InputError(f"--calib {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder or its "
                         "class sub-folders")
    arrays = []
    for p, _ in items:
        try:
            with Image.open(p) as src:
                im = src.convert(mode)
                if size is not None:
                    im = im.resize((size[1], size[0]))
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"--calib {p}: not a readable image ({exc})") from None
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"--calib {folder}: images differ in size ({sorted(shapes)[:3]}); give an image size")
    y = None if classes == [] else np.array([c for _, c in items])
    return np.stack(arrays), y


def _callable(ref: str, max_samples: int) -> tuple[Any, Any]:
    import numpy as np
    import torch

    from hwkit.models import user_builder

    try:
        fn = user_builder(ref)
    except Exception as exc:  # ModelLoadError says --arch; say --calib
        raise InputError(f"--calib {ref}: {str(exc).split(': ', 1)[-1]}") from None
    try:
        loader = fn()
        xs, ys, n = [], [], 0
        for batch in loader:
            x, y = (batch[0], batch[1]) if isinstance(batch, list | tuple) and len(batch) >= 2 else (batch, None)
            if isinstance(x, list | tuple):
                x = x[0]
            xs.append(torch.as_tensor(x).detach().float().cpu())
            if y is not None:
                ys.append(torch.as_tensor(y).detach().long().cpu())
            n += len(xs[-1])
            if n >= max_samples:
                break
    except InputError:
        raise
    except Exception as exc:  # the user's loader may fail in any way
        raise InputError(f"--calib {ref}: the loader failed ({type(exc).__name__}: {exc})") from None
    if not xs:
        raise InputError(f"--calib {ref}: the loader yielded no batches")
    x = torch.cat(xs)[:max_samples].numpy()
    y = torch.cat(ys)[:max_samples].numpy() if len(ys) == len(xs) and ys else None
    return np.asarray(x), y


def load_data(spec: str, labels: str | None = None, seed: int = 0, max_samples: int = 10000,
              image_mode: str = "L", image_size: tuple[int, int] | None = None) -> SplitData:
    """Read ``spec`` (see the module docstring) into seeded splits."""
    import numpy as np

    if spec == "digits":
        from hwkit.compress.amp.toy import digits_splits

        d = digits_splits(seed)
        return SplitData(*d["train"], *d["val"], *d["test"], f"sklearn digits (stratified 60/20/20 split, seed {seed})")
    path = Path(spec)
    if path.is_dir():
        x, y = _images(path, image_mode, image_size)
        return _split(x, y, seed, f"{path} (images)")
    if path.suffix == ".npz" and path.is_file():
        x, y = _npz(path)
        return _split(x, y, seed, str(path))
    if path.suffix == ".npy" and path.is_file():
        try:
            x = np.load(path, allow_pickle=False)
            y = None if labels is None else np.load(labels, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read calibration data ({exc})") from None
        if y is not None and len(y) != len(x):
            raise InputError(f"--labels has {len(y)} entries but --calib has {len(x)} samples")
        return _split(x, y, seed, str(path))
    if ":" in spec and not path.exists():
        x, y = _callable(spec, max_samples)
        return _split(x, y, seed, spec)
    raise InputError(f"--calib {spec}: expected 'digits', an existing .npz (x, y) / .npy file, a folder of "
                     "images, or package.module:function returning a DataLoader")
