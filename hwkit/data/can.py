"""CAN frames and their readers: Car-Hacking (HCRL) CSV and text files, and standard CAN logs.

Formats (see docs/cqmlp.md):

- **Car-Hacking attack CSV** (``DoS_dataset.csv`` ...), no header, *ragged* rows::

      Timestamp,CAN ID,DLC,DATA[0],...,DATA[DLC-1],Flag        e.g. 1478198376.389427,0316,8,05,...,6f,R

  The Flag (``T`` injected, ``R`` normal) sits at column ``3 + DLC``, not in a fixed 12th column;
  empty trailing fields (rows padded to 12 columns) are accepted. Data are zero-padded to 8 bytes.
- **normal_run_data.txt**: ``Timestamp: 1479121434.850202  ID: 0350  000  DLC: 8  05 28 84 66 6d 00 00 a2``
  (all frames normal).
- **Standard CAN logs** through python-can: candump ``.log`` (CanutilsLogReader), Vector ``.asc``
  (ASCReader), ``.blf`` (BLFReader), and whatever else ``can.LogReader`` reads (``.trc``, ``.mf4``...).
  These carry no injection flag, so their frames are read as normal traffic.

A malformed line is counted and recorded with its line number; with ``strict=True`` the first one
raises :class:`CanDataError` naming ``file:line``. A line is never guessed into a frame or a label.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from hwkit.errors import InputError

MAX_STANDARD_ID = 0x7FF
"""Largest 11-bit CAN identifier; CQMLP encodes the ID in two bytes and the dataset uses 11-bit IDs."""
KEEP_MALFORMED = 50
"""How many malformed lines a report keeps verbatim (all are counted)."""
HEX = [f"{i:02x}" for i in range(256)]


class CanDataError(InputError):
    """A CAN data file is missing, unreadable, or has a malformed line (in strict mode)."""


@dataclass(frozen=True)
class Frames:
    """CAN frames as parallel numpy arrays (one row per frame, in file order)."""

    time_s: np.ndarray
    """float64 timestamps, seconds (Unix epoch for the Car-Hacking files)."""
    can_id: np.ndarray
    """uint16 11-bit identifiers."""
    dlc: np.ndarray
    """uint8 data length code, 0..8."""
    data: np.ndarray
    """uint8 payload, shape (n, 8), zero-padded past the DLC."""
    injected: np.ndarray
    """bool: True for frames flagged T (injected by the attacker)."""

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    @staticmethod
    def empty() -> Frames:
        """No frames."""
        return Frames(np.zeros(0), np.zeros(0, np.uint16), np.zeros(0, np.uint8), np.zeros((0, 8), np.uint8),
                      np.zeros(0, bool))

    @staticmethod
    def from_lists(time_s: list[float], can_id: list[int], dlc: list[int], data: bytes | bytearray,
                   injected: list[bool]) -> Frames:
        """Build from per-frame lists; ``data`` is 8 bytes per frame, concatenated."""
        n = len(time_s)
        return Frames(
            np.asarray(time_s, dtype=np.float64), np.asarray(can_id, dtype=np.uint16),
            np.asarray(dlc, dtype=np.uint8), np.frombuffer(bytes(data), dtype=np.uint8).reshape(n, 8).copy(),
            np.asarray(injected, dtype=bool),
        )

    def take(self, index: np.ndarray) -> Frames:
        """The frames at ``index`` (an index or boolean mask array)."""
        return Frames(self.time_s[index], self.can_id[index], self.dlc[index], self.data[index],
                      self.injected[index])

    def features(self) -> np.ndarray:
        """uint8 (n, 10): ``[ID >> 8, ID & 0xFF, D0..D7]`` per frame (the CQMLP encoding)."""
        out = np.empty((len(self), 10), dtype=np.uint8)
        out[:, 0] = (self.can_id >> 8).astype(np.uint8)
        out[:, 1] = (self.can_id & 0xFF).astype(np.uint8)
        out[:, 2:] = self.data
        return out


@dataclass(frozen=True)
class MalformedLine:
    """One line that could not be read."""

    line: int
    """1-based line number (message index for binary formats)."""
    reason: str
    """What was wrong."""
    text: str
    """The line, truncated to 120 characters."""


@dataclass(frozen=True)
class ReadReport:
    """What reading one file found."""

    path: str
    """The file."""
    format: str
    """car-hacking-csv | car-hacking-text | candump | asc | blf | python-can."""
    lines: int
    """Lines (or records) looked at."""
    frames: int
    """Frames read."""
    injected: int
    """Frames flagged T."""
    malformed_count: int
    """Malformed lines skipped (all of them)."""
    malformed: tuple[MalformedLine, ...] = field(default=())
    """The first :data:`KEEP_MALFORMED` malformed lines."""

    def summary(self) -> str:
        """One line for the console."""
        text = f"{self.path}: {self.frames:,} frames ({self.injected:,} injected) from {self.lines:,} lines"
        if self.malformed_count:
            first = self.malformed[0]
            text += f"; {self.malformed_count} malformed line(s) skipped, first at line {first.line}: {first.reason}"
        return text

    def to_json(self) -> dict[str, Any]:
        """Plain values for metrics/meta."""
        return {"path": self.path, "format": self.format, "lines": self.lines, "frames": self.frames,
                "injected": self.injected, "malformed_count": self.malformed_count,
                "malformed": [{"line": m.line, "reason": m.reason} for m in self.malformed[:10]]}


class _Malformed:
    """Collects malformed lines; raises at the first one in strict mode."""

    def __init__(self, path: Path, strict: bool) -> None:
        self.path, self.strict = path, strict
        self.count = 0
        self.kept: list[MalformedLine] = []

    def add(self, line_no: int, reason: str, text: str) -> None:
        if self.strict:
            raise CanDataError(f"{self.path}:{line_no}: {reason} (line: {text.strip()[:80]!r})")
        self.count += 1
        if len(self.kept) < KEEP_MALFORMED:
            self.kept.append(MalformedLine(line_no, reason, text.strip()[:120]))


def _open_text(path: Path) -> io.TextIOWrapper:
    if not path.is_file():
        raise CanDataError(f"{path}: CAN data file not found")
    try:
        return path.open("r", encoding="ascii", errors="replace", newline="")
    except OSError as exc:
        raise CanDataError(f"{path}: cannot read ({exc.strerror})") from None


def _hex_byte(text: str) -> int:
    if len(text) != 2:
        raise ValueError
    return int(text, 16)


def _parse_head(t_text: str, id_text: str, dlc_text: str) -> tuple[float, int, int] | str:
    """Timestamp, 11-bit CAN ID (hex) and DLC of one frame, or the reason they are malformed."""
    try:
        t = float(t_text)
    except ValueError:
        return f"timestamp {t_text[:20]!r} is not a number"
    if not math.isfinite(t):
        return f"timestamp {t_text[:20]!r} is not a finite number"
    try:
        can_id = int(id_text, 16)
    except ValueError:
        return f"CAN ID {id_text[:20]!r} is not hexadecimal"
    if not 0 <= can_id <= MAX_STANDARD_ID:
        return f"CAN ID {id_text!r} is not an 11-bit standard ID"
    try:
        dlc = int(dlc_text)
    except ValueError:
        return f"DLC {dlc_text[:20]!r} is not an integer"
    if not 0 <= dlc <= 8:
        return f"DLC {dlc} is outside 0..8"
    return t, can_id, dlc


def _parse_csv_row(parts: list[str]) -> tuple[float, int, int, bytes, bool] | str:
    """One ragged Car-Hacking CSV row -> (t, id, dlc, 8 bytes, injected), or the reason it is malformed."""
    if len(parts) < 4:
        return f"expected at least 4 comma-separated fields, got {len(parts)}"
    head = _parse_head(parts[0], parts[1], parts[2])
    if isinstance(head, str):
        return head
    t, can_id, dlc = head
    if len(parts) < 4 + dlc:
        return f"DLC {dlc} needs {4 + dlc} fields (data + flag), got {len(parts)}"
    flag = parts[3 + dlc].strip()
    if flag not in ("R", "T"):
        return f"flag {flag[:10]!r} at column {4 + dlc} (3 + DLC, 1-based {4 + dlc}) is not R or T"
    if any(p.strip() for p in parts[4 + dlc:]):
        return f"{len(parts) - 4 - dlc} unexpected non-empty field(s) after the flag"
    try:
        payload = bytes(_hex_byte(p) for p in parts[3:3 + dlc])
    except ValueError:
        return "a data byte is not two hexadecimal digits"
    return t, can_id, dlc, payload + bytes(8 - dlc), flag == "T"


def read_car_hacking_csv(path: Path, strict: bool = False) -> tuple[Frames, ReadReport]:
    """Read a ragged Car-Hacking attack CSV (the flag is at column 3 + DLC; data zero-padded)."""
    path = Path(path)
    bad = _Malformed(path, strict)
    ts: list[float] = []
    ids: list[int] = []
    dlcs: list[int] = []
    inj: list[bool] = []
    data = bytearray()
    n_lines = 0
    with _open_text(path) as fh:
        for n_lines, line in enumerate(fh, 1):  # noqa: B007 (n_lines is used after the loop)
            if not line.strip():
                continue
            row = _parse_csv_row(line.rstrip("\r\n").split(","))
            if isinstance(row, str):
                if n_lines == 1 and "timestamp" in line.lower():
                    continue  # a header row written by some tools
                bad.add(n_lines, row, line)
                continue
            ts.append(row[0])
            ids.append(row[1])
            dlcs.append(row[2])
            data += row[3]
            inj.append(row[4])
    frames = Frames.from_lists(ts, ids, dlcs, data, inj)
    return frames, _report(path, "car-hacking-csv", n_lines, frames, bad)


def _parse_text_row(tok: list[str]) -> tuple[float, int, int, bytes] | str:
    if len(tok) < 7 or tok[0] != "Timestamp:" or tok[2] != "ID:" or tok[5] != "DLC:":
        return "expected 'Timestamp: T  ID: XXXX  FFF  DLC: N  bytes...'"
    head = _parse_head(tok[1], tok[3], tok[6])
    if isinstance(head, str):
        return head
    t, can_id, dlc = head
    if len(tok) != 7 + dlc:
        return f"DLC {dlc} but {len(tok) - 7} data bytes"
    try:
        payload = bytes(_hex_byte(p) for p in tok[7:])
    except ValueError:
        return "a data byte is not two hexadecimal digits"
    return t, can_id, dlc, payload + bytes(8 - dlc)


def read_car_hacking_text(path: Path, strict: bool = False) -> tuple[Frames, ReadReport]:
    """Read ``normal_run_data.txt`` (``Timestamp: ... ID: 0350 000 DLC: 8 05 28 ...``); all frames normal."""
    path = Path(path)
    bad = _Malformed(path, strict)
    ts: list[float] = []
    ids: list[int] = []
    dlcs: list[int] = []
    data = bytearray()
    n_lines = 0
    with _open_text(path) as fh:
        for n_lines, line in enumerate(fh, 1):  # noqa: B007
            tok = line.split()
            if not tok:
                continue
            row = _parse_text_row(tok)
            if isinstance(row, str):
                bad.add(n_lines, row, line)
                continue
            ts.append(row[0])
            ids.append(row[1])
            dlcs.append(row[2])
            data += row[3]
    frames = Frames.from_lists(ts, ids, dlcs, data, [False] * len(ts))
    return frames, _report(path, "car-hacking-text", n_lines, frames, bad)


class _LineCounter:
    """An iterator over a text file's lines that knows the number of the last line it gave out."""

    def __init__(self, fh: io.TextIOWrapper) -> None:
        self.fh, self.line_no, self.last = fh, 0, ""

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        self.last = next(self.fh)
        self.line_no += 1
        return self.last

    def close(self) -> None:  # python-can closes its file when it finishes
        pass


def _message_row(msg: Any) -> tuple[float, int, int, bytes] | str | None:
    """A python-can Message -> (t, id, dlc, 8 bytes); a reason if it cannot be encoded; None to skip."""
    if msg.is_error_frame:
        return None  # bus error frames are not CAN data frames
    if msg.is_fd and msg.dlc > 8:
        return f"CAN FD frame with {msg.dlc} data bytes (CQMLP encodes classic CAN, at most 8)"
    if msg.arbitration_id > MAX_STANDARD_ID:
        return f"extended ID 0x{msg.arbitration_id:X} (CQMLP encodes 11-bit standard IDs)"
    dlc = min(int(msg.dlc), 8)
    payload = bytes(msg.data or b"")[:8]
    t = float(msg.timestamp)
    if not math.isfinite(t):
        return f"timestamp {msg.timestamp!r} is not a finite number"
    return t, int(msg.arbitration_id), dlc, payload + bytes(8 - len(payload))


def _log_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".log": "candump", ".asc": "asc", ".blf": "blf"}.get(suffix, "python-can")


def read_can_log(path: Path, strict: bool = False) -> tuple[Frames, ReadReport]:
    """Read a standard CAN log through python-can: candump ``.log``, ``.asc``, ``.blf`` (or any
    ``can.LogReader`` format). No injection flag exists in these formats: frames are normal traffic.

    For the text formats, a line python-can cannot parse is recorded with its line number and reading
    continues on the next line (a fresh python-can reader on the same stream). A corrupt BLF object
    ends the file (binary containers cannot be re-synchronised): the frames before it are kept.
    """
    import can

    path = Path(path)
    if not path.is_file():
        raise CanDataError(f"{path}: CAN log file not found")
    fmt = _log_format(path)
    bad = _Malformed(path, strict)
    ts: list[float] = []
    ids: list[int] = []
    dlcs: list[int] = []
    data = bytearray()
    lines = 0

    def keep(msg: Any, where: int, text: str) -> None:
        row = _message_row(msg)
        if row is None:
            return
        if isinstance(row, str):
            bad.add(where, row, text)
            return
        ts.append(row[0])
        ids.append(row[1])
        dlcs.append(row[2])
        data.extend(row[3])

    if fmt in ("candump", "asc"):
        reader_cls = can.CanutilsLogReader if fmt == "candump" else can.ASCReader
        with _open_text(path) as fh:
            counter = _LineCounter(fh)
            reader: Any = reader_cls(cast(TextIO, counter))  # python-can only iterates it
            while True:
                try:
                    for msg in reader:
                        keep(msg, counter.line_no, counter.last)
                    break
                except (ValueError, IndexError, KeyError, TypeError) as exc:
                    reason = f"python-can {reader_cls.__name__} cannot parse it ({type(exc).__name__}: {exc})"
                    bad.add(counter.line_no, reason[:200], counter.last)
                    fresh: Any = reader_cls(cast(TextIO, counter))
                    if fmt == "asc":  # keep the header already read; do not let it eat a data line
                        for attr in ("base", "_converted_base", "start_time", "date", "timestamps_format"):
                            setattr(fresh, attr, getattr(reader, attr))
                        fresh._extract_header = lambda: None
                    reader = fresh
        lines = counter.line_no
    else:
        try:
            reader = can.BLFReader(str(path)) if fmt == "blf" else can.LogReader(str(path))
        except ValueError as exc:
            raise CanDataError(f"{path}: python-can cannot read this file ({exc})") from None
        except Exception as exc:  # BLFParseError and struct errors: a corrupt or foreign file
            raise CanDataError(f"{path}: not a readable {fmt} log ({type(exc).__name__}: {exc})") from None
        try:
            for msg in reader:
                lines += 1
                keep(msg, lines, repr(msg))
        except Exception as exc:  # python-can's binary readers raise struct/zlib/parse errors
            bad.add(lines + 1, f"corrupt record, rest of file unreadable ({type(exc).__name__}: {exc})"[:200], "")
        finally:
            reader.stop()
    frames = Frames.from_lists(ts, ids, dlcs, data, [False] * len(ts))
    return frames, _report(path, fmt, lines, frames, bad)


def _report(path: Path, fmt: str, lines: int, frames: Frames, bad: _Malformed) -> ReadReport:
    if len(frames) == 0:
        first = f"; first malformed line {bad.kept[0].line}: {bad.kept[0].reason}" if bad.kept else ""
        raise CanDataError(f"{path}: no CAN frames could be read ({lines} lines{first})")
    return ReadReport(str(path), fmt, lines, len(frames), int(frames.injected.sum()), bad.count, tuple(bad.kept))


def read_frames(path: Path, strict: bool = False) -> tuple[Frames, ReadReport]:
    """Read any supported file, choosing the reader by name and suffix (see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_car_hacking_csv(path, strict)
    if suffix == ".txt":
        return read_car_hacking_text(path, strict)
    return read_can_log(path, strict)


def write_car_hacking_csv(frames: Frames, path: Path) -> None:
    """Write frames in the ragged Car-Hacking CSV layout (flag at column 3 + DLC)."""
    rows = []
    ts = frames.time_s.tolist()
    ids = frames.can_id.tolist()
    dlcs = frames.dlc.tolist()
    data = frames.data.tolist()
    flags = np.where(frames.injected, "T", "R").tolist()
    for t, i, d, b, f in zip(ts, ids, dlcs, data, flags):
        body = ",".join([HEX[x] for x in b[:d]])
        rows.append(f"{t:.6f},{i:04x},{d},{body},{f}" if d else f"{t:.6f},{i:04x},0,{f}")
    Path(path).write_text("\n".join(rows) + "\n", encoding="ascii")


def write_car_hacking_text(frames: Frames, path: Path) -> None:
    """Write frames in the ``normal_run_data.txt`` layout (no flag: use for normal traffic only)."""
    rows = []
    for t, i, d, b in zip(frames.time_s.tolist(), frames.can_id.tolist(), frames.dlc.tolist(), frames.data.tolist()):
        body = " ".join([HEX[x] for x in b[:d]])
        rows.append(f"Timestamp: {t:.6f}        ID: {i:04x}    000    DLC: {d}    {body}")
    Path(path).write_text("\n".join(rows) + "\n", encoding="ascii")
