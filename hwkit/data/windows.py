"""CQMLP input blocks: n consecutive frames -> 10n uint8 features, labels, and train/val/test splits.

- Encoding: per frame ``[ID >> 8, ID & 0xFF, D0..D7]`` (payload zero-padded), frames concatenated
  oldest -> newest (the order is not stated in the paper [VERIFY]; oldest-first matches a FIFO).
- Labelling (conservative): a window containing any injected (``T``) frame gets its file's attack
  class, otherwise Benign. Windows never cross files.
- Splits: ``time`` (default) cuts every file into consecutive train | val | test stretches of frames
  and drops the windows that straddle a cut, so no frame is in two splits; ``random`` shuffles all
  windows (the paper's probable setting: overlapping neighbours leak across the split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.data.can import CanDataError, Frames, ReadReport, read_frames

CLASSES: tuple[str, ...] = ("Benign", "DoS", "Fuzzing", "RPM")
"""CQMLP's output classes (index = label)."""
SPLITS = ("time", "random")
DEFAULT_FRACTIONS = (0.85, 0.10, 0.05)
"""The paper's train/val/test split."""


def file_class(path: Path) -> int | None:
    """Attack class of a Car-Hacking file from its name; 0 for normal traffic; None for files CQMLP
    does not use (the gear-spoofing file: gear is not one of the paper's four classes)."""
    name = path.name.lower()
    if name.startswith("dos"):
        return 1
    if name.startswith("fuzz"):
        return 2
    if name.startswith("rpm"):
        return 3
    if name.startswith("gear"):
        return None
    return 0


@dataclass(frozen=True)
class LabelledFile:
    """The frames of one file and the class its injected frames belong to."""

    name: str
    """File name."""
    label: int
    """Class index (into :data:`CLASSES`) of the file's injected frames; 0 for normal traffic."""
    frames: Frames
    """Frames in file order."""
    report: ReadReport
    """What the reader found."""


DATA_SUFFIXES = (".csv", ".txt", ".log", ".asc", ".blf", ".trc", ".mf4")


def load_directory(data_dir: Path, strict: bool = False) -> tuple[list[LabelledFile], list[str]]:
    """Read every CAN file in ``data_dir``; returns the labelled files and the names skipped (with why)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CanDataError(f"{data_dir}: data directory not found")
    files: list[LabelledFile] = []
    skipped: list[str] = []
    for path in sorted(data_dir.iterdir()):
        if not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        label = file_class(path)
        if label is None:
            skipped.append(f"{path.name} (gear spoofing is not a CQMLP class)")
            continue
        frames, report = read_frames(path, strict=strict)
        if label == 0 and frames.injected.any():
            raise CanDataError(f"{path}: {int(frames.injected.sum())} frames flagged T, but the file name does "
                               "not say which attack (name it DoS*/Fuzzy*/RPM*)")
        files.append(LabelledFile(path.name, label, frames, report))
    if not files:
        raise CanDataError(f"{data_dir}: no CAN data files ({', '.join(DATA_SUFFIXES)}) found")
    return files, skipped


@dataclass(frozen=True)
class Windows:
    """Windows of one or more files, in file order then time order."""

    x: np.ndarray
    """uint8 (m, 10n) features."""
    y: np.ndarray
    """int64 (m,) labels."""
    file_index: np.ndarray
    """int32 (m,) which file each window comes from."""
    first_frame: np.ndarray
    """int64 (m,) index of the window's oldest frame within its file."""
    window: int
    """Frames per window (n)."""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index: np.ndarray) -> Windows:
        """A subset."""
        return Windows(self.x[index], self.y[index], self.file_index[index], self.first_frame[index], self.window)

    def class_counts(self) -> list[int]:
        """Windows per class."""
        return np.bincount(self.y, minlength=len(CLASSES)).tolist()


def make_windows(frames: Frames, label: int, window: int = 4, stride: int = 1, file_index: int = 0) -> Windows:
    """Sliding windows over one file: features, conservative labels, positions."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    feats = frames.features()
    n = len(frames)
    if n < window:
        empty = np.zeros(0, np.int64)
        return Windows(np.zeros((0, 10 * window), np.uint8), empty, empty.astype(np.int32), empty, window)
    view = np.lib.stride_tricks.sliding_window_view(feats, (window, 10))[::stride, 0]  # (m, window, 10)
    x = np.ascontiguousarray(view).reshape(-1, 10 * window)
    inj = np.lib.stride_tricks.sliding_window_view(frames.injected, window)[::stride].any(axis=1)
    y = np.where(inj, label, 0).astype(np.int64)
    first = np.arange(0, n - window + 1, stride, dtype=np.int64)
    return Windows(x, y, np.full(y.shape, file_index, np.int32), first, window)


def concat(parts: Sequence[Windows]) -> Windows:
    """Join windows of several files."""
    w = parts[0].window
    return Windows(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                   np.concatenate([p.file_index for p in parts]), np.concatenate([p.first_frame for p in parts]), w)


@dataclass(frozen=True)
class Split:
    """Train / validation / test windows and how they were cut."""

    train: Windows
    val: Windows
    test: Windows
    mode: str
    """time | random."""
    fractions: tuple[float, float, float]
    """Train/val/test fractions."""
    dropped_windows: int
    """Windows straddling a time cut (dropped so that no frame is in two splits)."""

    def sizes(self) -> dict[str, int]:
        """Windows per split."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def describe(self) -> dict[str, Any]:
        """Plain values for meta/metrics."""
        return {"mode": self.mode, "fractions": list(self.fractions), "sizes": self.sizes(),
                "dropped_windows": self.dropped_windows,
                "class_counts": {k: dict(zip(CLASSES, getattr(self, k).class_counts()))
                                 for k in ("train", "val", "test")}}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def split_windows(files: Sequence[LabelledFile], window: int = 4, stride: int = 1, mode: str = "time",
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> Split:
    """Window every file and split (see the module docstring for ``time`` vs ``random``)."""
    fr = _check_fractions(fractions)
    if mode not in SPLITS:
        raise ValueError(f"split mode must be one of {SPLITS}, got {mode!r}")
    per_file = [make_windows(f.frames, f.label, window, stride, i) for i, f in enumerate(files)]
    if mode == "random":
        allw = concat(per_file)
        perm = np.random.default_rng(seed).permutation(len(allw))
        a = int(round(fr[0] * len(allw)))
        b = a + int(round(fr[1] * len(allw)))
        return Split(allw.take(np.sort(perm[:a])), allw.take(np.sort(perm[a:b])), allw.take(np.sort(perm[b:])),
                     mode, fr, 0)
    parts: dict[str, list[Windows]] = {"train": [], "val": [], "test": []}
    dropped = 0
    for f, w in zip(files, per_file):
        n = len(f.frames)
        cut1 = int(round(fr[0] * n))
        cut2 = int(round((fr[0] + fr[1]) * n))
        last = w.first_frame + window - 1
        sel = {"train": last < cut1, "val": (w.first_frame >= cut1) & (last < cut2), "test": w.first_frame >= cut2}
        for k, m in sel.items():
            parts[k].append(w.take(np.flatnonzero(m)))
        dropped += len(w) - sum(int(m.sum()) for m in sel.values())
    return Split(concat(parts["train"]), concat(parts["val"]), concat(parts["test"]), mode, fr, dropped)
