"""A seeded, Car-Hacking-style CAN traffic generator with a 500 kbit/s bus model.

What it models (parameters in :class:`SynthConfig`, choices documented in docs/cqmlp.md):

- **Benign traffic**: 27 periodic IDs (10/20/50/100/200 ms, Gaussian release jitter), each with a
  fixed DLC (mostly 8; some 2, 5, 6) and a payload layout of constant bytes, rolling counters
  (byte and nibble), slowly varying signals (one- and two-byte), sensor noise and a checksum byte.
  ``0x316`` carries engine RPM (bytes 2-3, little-endian, RPM x 4) and ``0x43F`` the gear (byte 1).
- **Attacks**, injected in ``intrusions`` non-overlapping windows of U(3, 5) s (the paper's files:
  300 per 30-40 min, which is the default density): DoS ``0x000`` all-zero every 0.3 ms, fuzzing
  random 11-bit ID and random 8 bytes every 0.5 ms, RPM spoofing ``0x316`` and gear spoofing
  ``0x43F`` with a fixed forged payload every 1 ms. Injected frames are flagged ``T``.
- **The bus**: every frame's length on the wire is computed exactly (SOF, 11-bit ID, RTR, IDE, r0,
  DLC, data, CRC-15 with bit stuffing, then CRC delimiter, ACK, EOF and 3-bit interframe space),
  at ``bitrate_bps``. The bus is non-preemptive; when it goes idle, the pending frame with the
  lowest ID wins arbitration. Each sender (every benign ID, the attacker) has one transmit mailbox:
  a new frame released while the previous one still waits replaces it, so under DoS benign
  frames are delayed and dropped (starved) as on a real bus. Timestamps are end-of-frame times.

Everything is a pure function of the seed. The generator writes the same ragged CSV
(:func:`hwkit.data.can.write_car_hacking_csv`) that the reader reads.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.data.can import Frames, write_car_hacking_csv, write_car_hacking_text

RPM_ID = 0x316
GEAR_ID = 0x43F
EPOCH_START_S = 1478198376.0
"""Timestamps start here (the first timestamp of the real DoS file), like the real files' Unix time."""
TRAILER_BITS = 13
"""Bits after the CRC that are never stuffed: CRC delimiter 1, ACK slot 1, ACK delimiter 1, EOF 7, IFS 3."""


@dataclass(frozen=True)
class Attack:
    """One attack type of the Car-Hacking dataset."""

    name: str
    """File stem: DoS | Fuzzy | RPM | gear."""
    can_id: int | None
    """Injected ID; None = uniformly random 11-bit ID per frame (fuzzing)."""
    period_s: float
    """Injection period inside an intrusion."""
    payload: tuple[int, ...] | None
    """Fixed 8-byte payload; None = uniformly random bytes per frame."""


# The spoofed payloads are our reconstruction [VERIFY against the T rows of the real files]: a frame
# with the benign layout of the ID but frozen values (RPM pinned at 3,000 rpm, gear pinned at 5;
# counters and checksums stale).
ATTACKS: dict[str, Attack] = {
    "DoS": Attack("DoS", 0x000, 0.3e-3, (0,) * 8),
    "Fuzzy": Attack("Fuzzy", None, 0.5e-3, None),
    "RPM": Attack("RPM", RPM_ID, 1e-3, (0x05, 0x20, 0xE0, 0x2E, 0x0F, 0x21, 0x7B, 0x00)),
    "gear": Attack("gear", GEAR_ID, 1e-3, (0x10, 0x05, 0x60, 0xFF, 0x7B, 0x00, 0x00, 0x00)),
}


@dataclass(frozen=True)
class BenignId:
    """One periodic benign message."""

    can_id: int
    """11-bit ID."""
    period_s: float
    """Nominal period."""
    dlc: int
    """Data length code (fixed per ID)."""
    layout: tuple[str, ...]
    """Kind of each data byte: const | counter | nibble | sig | sig_lo | sig_hi | noise | gear | checksum."""


# ~1,460 frames/s in total, the benign rate of the real DoS file (3.08 M normal frames in ~35 min).
_P10, _P20, _P50, _P100, _P200 = 0.010, 0.020, 0.050, 0.100, 0.200
VEHICLE: tuple[BenignId, ...] = (
    BenignId(0x002, _P10, 8, ("sig_lo", "sig_hi", "const", "const", "const", "const", "nibble", "checksum")),
    BenignId(0x130, _P10, 8, ("sig_lo", "sig_hi", "noise", "const", "sig_lo", "sig_hi", "nibble", "checksum")),
    BenignId(0x131, _P10, 8, ("sig_lo", "sig_hi", "noise", "const", "sig_lo", "sig_hi", "nibble", "checksum")),
    BenignId(0x140, _P10, 8, ("const", "const", "const", "const", "sig", "const", "counter", "checksum")),
    BenignId(0x18F, _P10, 8, ("const", "sig", "const", "const", "const", "sig", "const", "const")),
    BenignId(0x260, _P10, 8, ("sig", "sig", "sig", "const", "noise", "sig", "counter", "checksum")),
    BenignId(0x2A0, _P10, 8, ("const", "sig_lo", "sig_hi", "const", "const", "const", "nibble", "const")),
    BenignId(0x329, _P10, 8, ("const", "sig", "sig", "const", "noise", "const", "const", "counter")),
    BenignId(RPM_ID, _P10, 8, ("const", "const", "sig_lo", "sig_hi", "sig", "const", "sig", "checksum")),
    BenignId(0x350, _P10, 8, ("const", "sig", "const", "sig", "sig", "const", "const", "checksum")),
    BenignId(0x153, _P20, 8, ("const", "sig_lo", "sig_hi", "const", "const", "nibble", "const", "checksum")),
    BenignId(0x164, _P20, 8, ("const", "const", "sig", "const", "const", "const", "counter", "checksum")),
    BenignId(0x1F1, _P20, 8, ("const", "const", "const", "const", "const", "const", "const", "const")),
    BenignId(0x220, _P20, 8, ("sig_lo", "sig_hi", "sig_lo", "sig_hi", "const", "const", "counter", "checksum")),
    BenignId(0x2B0, _P20, 5, ("sig_lo", "sig_hi", "const", "nibble", "checksum")),
    BenignId(0x370, _P20, 8, ("const", "sig", "const", "const", "const", "const", "const", "const")),
    BenignId(0x080, _P50, 8, ("const", "sig", "sig", "const", "const", "const", "counter", "const")),
    BenignId(0x081, _P50, 8, ("const", "const", "sig", "const", "const", "const", "const", "const")),
    BenignId(0x165, _P50, 8, ("const", "sig", "sig", "const", "const", "const", "nibble", "checksum")),
    BenignId(0x18E, _P50, 2, ("const", "nibble")),
    BenignId(GEAR_ID, _P50, 8, ("const", "gear", "const", "const", "sig", "const", "const", "const")),
    BenignId(0x440, _P100, 8, ("const", "sig", "const", "const", "const", "const", "const", "const")),
    BenignId(0x4B1, _P100, 8, ("const", "const", "const", "const", "const", "const", "const", "const")),
    BenignId(0x4F0, _P100, 8, ("const", "sig", "const", "const", "counter", "const", "const", "const")),
    BenignId(0x545, _P100, 8, ("const", "sig", "const", "const", "const", "sig", "const", "const")),
    BenignId(0x5A0, _P100, 8, ("const", "const", "const", "const", "const", "const", "const", "const")),
    BenignId(0x690, _P200, 6, ("const", "sig", "const", "const", "counter", "checksum")),
)


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings (all durations in seconds)."""

    duration_s: float = 60.0
    """Length of each generated file."""
    intrusions: int | None = None
    """Intrusion windows per attack file; None = the paper's density, 300 per 35 min."""
    intrusion_min_s: float = 3.0
    """Shortest intrusion."""
    intrusion_max_s: float = 5.0
    """Longest intrusion."""
    min_gap_s: float = 0.5
    """Least benign-only time before each intrusion and after the last."""
    bitrate_bps: int = 500_000
    """Bus bit rate (500 kbit/s assumed: a typical high-speed powertrain CAN)."""
    jitter_s: float = 0.2e-3
    """Standard deviation of each benign frame's release time around its period grid."""
    attacker_jitter_s: float = 0.01e-3
    """Standard deviation of the attacker's release times."""
    seed: int = 0
    """Everything is a function of the seed (and the file's attack)."""

    def n_intrusions(self) -> int:
        """Intrusions per attack file."""
        if self.intrusions is not None:
            return self.intrusions
        return max(1, round(self.duration_s * 300 / (35 * 60)))


@dataclass(frozen=True)
class SynthInfo:
    """What the generator did for one file (for tests, docs and sanity checks)."""

    attack: str | None
    """Attack name, or None for the normal-run file."""
    intrusions_s: tuple[tuple[float, float], ...]
    """(start, end) of each intrusion, seconds from the file start."""
    released: dict[str, int]
    """Frames released by benign senders / the attacker."""
    sent: dict[str, int]
    """Frames that made it onto the bus."""
    bus_load: float
    """Fraction of the file's time the bus was busy."""
    benign_delay_ms: dict[str, float]
    """Mean benign queueing delay (release to start of frame), outside and inside intrusions."""

    def to_json(self) -> dict[str, Any]:
        """Plain values."""
        return {"attack": self.attack, "intrusions": len(self.intrusions_s), "released": self.released,
                "sent": self.sent, "bus_load": round(self.bus_load, 4), "benign_delay_ms": self.benign_delay_ms}


def _crc15_and_bits(can_id: np.ndarray, dlc: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stuffable bit stream of each standard data frame (SOF..CRC) and its length, vectorised."""
    n = can_id.shape[0]
    width = 19 + 64 + 15
    bits = np.zeros((n, width), dtype=np.uint8)
    # SOF = 0 (col 0), ID 11 bits MSB first (cols 1-11), RTR/IDE/r0 = 0 (12-14), DLC 4 bits (15-18).
    for k in range(11):
        bits[:, 1 + k] = (can_id >> (10 - k)) & 1
    for k in range(4):
        bits[:, 15 + k] = (dlc >> (3 - k)) & 1
    data_bits = np.unpackbits(data, axis=1)  # (n, 64), MSB first per byte
    used = np.arange(64)[None, :] < (dlc.astype(np.int64) * 8)[:, None]
    bits[:, 19:83] = np.where(used, data_bits, 0)
    body_len = 19 + dlc.astype(np.int64) * 8
    crc = np.zeros(n, dtype=np.int64)
    for j in range(83):
        live = j < body_len
        nxt = bits[:, j].astype(np.int64) ^ ((crc >> 14) & 1)
        new = ((crc << 1) & 0x7FFF) ^ np.where(nxt == 1, 0x4599, 0)
        crc = np.where(live, new, crc)
    rows = np.arange(n)[:, None]
    cols = body_len[:, None] + np.arange(15)[None, :]
    bits[rows, cols] = ((crc[:, None] >> (14 - np.arange(15))[None, :]) & 1).astype(np.uint8)
    # bits after body_len + 15 stay 0 but are outside the frame (masked by the length below)
    return bits, body_len + 15


def frame_bits(can_id: np.ndarray, dlc: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Exact on-wire bits of standard data frames, including stuff bits, trailer and interframe space."""
    bits, length = _crc15_and_bits(np.asarray(can_id, np.int64), np.asarray(dlc, np.int64),
                                   np.asarray(data, np.uint8).reshape(-1, 8))
    n = bits.shape[0]
    last = np.full(n, 2, dtype=np.int8)
    run = np.zeros(n, dtype=np.int64)
    stuffed = np.zeros(n, dtype=np.int64)
    for j in range(bits.shape[1]):
        live = j < length
        b = bits[:, j].astype(np.int8)
        same = b == last
        run = np.where(live, np.where(same, run + 1, 1), run)
        last = np.where(live, b, last)
        hit = live & (run == 5)
        stuffed += hit
        # the stuff bit is the complement and starts a new run of length 1
        last = np.where(hit, 1 - b, last)
        run = np.where(hit, 1, run)
    return length + stuffed + TRAILER_BITS


def _signal(car: np.random.Generator, noise: np.random.Generator, t: np.ndarray, lo: int, hi: int,
            ) -> np.ndarray:
    """A slowly varying signal in [lo, hi]: two slow sinusoids (the car's) plus a little noise (the file's)."""
    mid, amp = (lo + hi) / 2, (hi - lo) / 2
    p1, p2 = car.uniform(8, 40), car.uniform(60, 200)
    a = car.uniform(0.3, 0.7)
    ph1, ph2 = noise.uniform(0, 6.3), noise.uniform(0, 6.3)
    s = mid + amp * (a * np.sin(2 * np.pi * t / p1 + ph1) + (1 - a) * 0.9 * np.sin(2 * np.pi * t / p2 + ph2))
    s += noise.normal(0, amp * 0.01, size=t.shape)
    return np.clip(np.rint(s), lo, hi).astype(np.int64)


def _payloads(spec: BenignId, t: np.ndarray, car: np.random.Generator, noise: np.random.Generator) -> np.ndarray:
    """Payloads (k, 8) for the k frames of one benign ID at times ``t`` (zero past the DLC).

    ``car`` draws what belongs to the vehicle (constants, ranges, signal periods: the same in every
    file of a dataset); ``noise`` draws what belongs to the drive (phases, counter starts, noise).
    """
    k = t.shape[0]
    out = np.zeros((k, 8), dtype=np.int64)
    idx = np.arange(k)
    pending_hi: np.ndarray | None = None
    for pos, kind in enumerate(spec.layout):
        if kind == "const":
            out[:, pos] = car.integers(0, 256)
        elif kind == "counter":
            out[:, pos] = (idx + noise.integers(0, 256)) % 256
        elif kind == "nibble":
            out[:, pos] = (car.integers(0, 16) << 4) | ((idx + noise.integers(0, 16)) % 16)
        elif kind == "sig":
            out[:, pos] = _signal(car, noise, t, int(car.integers(0, 80)), int(car.integers(150, 256)))
        elif kind == "noise":
            out[:, pos] = np.clip(car.integers(100, 156) + noise.integers(-3, 4, size=k), 0, 255)
        elif kind == "gear":
            # gear 1..6, changing every few seconds (a slow random walk)
            steps = np.floor(t / 4.0).astype(np.int64)
            walk = np.cumsum(noise.choice([-1, 0, 1], size=int(steps.max()) + 1 if k else 1))
            out[:, pos] = np.clip(3 + walk[steps], 1, 6) if k else 0
        elif kind == "sig_lo":
            if spec.can_id == RPM_ID:
                value = _signal(car, noise, t, 700, 4500) * 4  # RPM x 4
            else:
                value = _signal(car, noise, t, int(car.integers(0, 4000)), int(car.integers(8000, 65535)))
            out[:, pos] = value & 0xFF
            pending_hi = value >> 8
        elif kind == "sig_hi":
            assert pending_hi is not None, f"0x{spec.can_id:03X}: sig_hi without a preceding sig_lo"
            out[:, pos] = pending_hi & 0xFF
            pending_hi = None
    for pos, kind in enumerate(spec.layout):
        if kind == "checksum":
            out[:, pos] = (out[:, :pos].sum(axis=1) + spec.can_id) & 0xFF
    return out.astype(np.uint8)


def _intrusions(cfg: SynthConfig, rng: np.random.Generator) -> list[tuple[float, float]]:
    n = cfg.n_intrusions()
    lengths = rng.uniform(cfg.intrusion_min_s, cfg.intrusion_max_s, size=n)
    free = cfg.duration_s - lengths.sum() - cfg.min_gap_s * (n + 1)
    if free < 0:
        raise ValueError(f"{n} intrusions of {cfg.intrusion_min_s}-{cfg.intrusion_max_s} s do not fit in "
                         f"{cfg.duration_s} s; lower intrusions or raise duration_s")
    gaps = rng.dirichlet(np.ones(n + 1)) * free + cfg.min_gap_s
    starts = np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(lengths[:-1])])
    return [(float(s), float(s + d)) for s, d in zip(starts, lengths)]


def _simulate_bus(release_s: np.ndarray, prio: np.ndarray, sender: np.ndarray,
                  duration_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-preemptive CAN arbitration with one mailbox per sender.

    Inputs sorted by release time. Returns (start time, end time) per frame; NaN for frames replaced
    in their mailbox before they won the bus (dropped).
    """
    rel = release_s.tolist()
    pri = prio.tolist()
    snd = sender.tolist()
    dur = duration_s.tolist()
    n = len(rel)
    start = [float("nan")] * n
    end = [float("nan")] * n
    mailbox: dict[int, int] = {}
    heap: list[tuple[int, float, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    t = rel[0] if n else 0.0
    i = 0
    while i < n or heap:
        if not heap and t < rel[i]:
            t = rel[i]
        while i < n and rel[i] <= t:
            mailbox[snd[i]] = i  # replaces (drops) an older frame still waiting in this mailbox
            push(heap, (pri[i], rel[i], i))
            i += 1
        k = -1
        while heap:
            _, _, j = pop(heap)
            if mailbox.get(snd[j]) == j:
                k = j
                break
        if k < 0:
            continue
        del mailbox[snd[k]]
        start[k] = t
        t += dur[k]
        end[k] = t
    return np.asarray(start), np.asarray(end)


def generate(attack: str | None, cfg: SynthConfig | None = None) -> tuple[Frames, SynthInfo]:
    """Generate one file's traffic: ``attack`` in :data:`ATTACKS`, or None for normal driving only."""
    cfg = cfg or SynthConfig()
    if attack is not None and attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")
    file_key = 0 if attack is None else 1 + list(ATTACKS).index(attack)
    vehicle_rng = np.random.default_rng([cfg.seed, 0])  # the same car in every file of a dataset
    rng = np.random.default_rng([cfg.seed, 1000 + file_key])
    car_seeds = vehicle_rng.integers(1 << 62, size=len(VEHICLE))

    rel_parts: list[np.ndarray]
    id_parts: list[Any]  # rng.integers is typed as scalar-or-array
    dlc_parts: list[np.ndarray]
    data_parts: list[np.ndarray]
    snd_parts: list[np.ndarray]
    inj_parts: list[np.ndarray]
    rel_parts, id_parts, dlc_parts, data_parts, snd_parts, inj_parts = [], [], [], [], [], []
    for s, spec in enumerate(VEHICLE):
        phase = rng.uniform(0, spec.period_s)
        grid = np.arange(phase, cfg.duration_s, spec.period_s)
        t = np.clip(grid + rng.normal(0, cfg.jitter_s, size=grid.shape), 0, cfg.duration_s)
        data = _payloads(spec, t, np.random.default_rng(car_seeds[s]), np.random.default_rng([cfg.seed, file_key, s]))
        data[:, spec.dlc:] = 0
        rel_parts.append(t)
        id_parts.append(np.full(t.shape, spec.can_id))
        dlc_parts.append(np.full(t.shape, spec.dlc))
        data_parts.append(data)
        snd_parts.append(np.full(t.shape, s))
        inj_parts.append(np.zeros(t.shape, bool))

    windows: list[tuple[float, float]] = []
    if attack is not None:
        spec_a = ATTACKS[attack]
        windows = _intrusions(cfg, rng)
        t = np.concatenate([np.arange(a, b, spec_a.period_s) for a, b in windows])
        t = t + rng.normal(0, cfg.attacker_jitter_s, size=t.shape)
        k = t.shape[0]
        ids = rng.integers(0, 0x800, size=k) if spec_a.can_id is None else np.full(k, spec_a.can_id)
        if spec_a.payload is None:
            data = rng.integers(0, 256, size=(k, 8)).astype(np.uint8)
        else:
            data = np.tile(np.asarray(spec_a.payload, np.uint8), (k, 1))
        rel_parts.append(t)
        id_parts.append(ids)
        dlc_parts.append(np.full(k, 8))
        data_parts.append(data)
        snd_parts.append(np.full(k, len(VEHICLE)))
        inj_parts.append(np.ones(k, bool))

    release = np.concatenate(rel_parts)
    order = np.argsort(release, kind="stable")
    release = release[order]
    can_id = np.concatenate(id_parts)[order].astype(np.int64)
    dlc = np.concatenate(dlc_parts)[order].astype(np.int64)
    data = np.concatenate(data_parts)[order]
    sender = np.concatenate(snd_parts)[order]
    injected = np.concatenate(inj_parts)[order]

    bits = frame_bits(can_id, dlc, data)
    start, end = _simulate_bus(release, can_id, sender, bits / cfg.bitrate_bps)
    sent = ~np.isnan(end)
    inside = np.zeros(release.shape, bool)
    for a, b in windows:
        inside |= (release >= a) & (release < b)
    benign = ~injected
    delay = (start - release) * 1e3

    def mean(mask: np.ndarray) -> float:
        return round(float(delay[mask].mean()), 4) if mask.any() else 0.0

    info = SynthInfo(
        attack=attack,
        intrusions_s=tuple(windows),
        released={"benign": int(benign.sum()), "attack": int(injected.sum())},
        sent={"benign": int((benign & sent).sum()), "attack": int((injected & sent).sum())},
        bus_load=float((bits[sent] / cfg.bitrate_bps).sum() / cfg.duration_s),
        benign_delay_ms={"outside_intrusions": mean(benign & sent & ~inside),
                         "inside_intrusions": mean(benign & sent & inside)},
    )
    keep = np.flatnonzero(sent)
    keep = keep[np.argsort(end[keep], kind="stable")]
    # logged at end of frame, microsecond resolution like the real files
    time_s = np.round(EPOCH_START_S + end[keep], 6)
    frames = Frames(time_s, can_id[keep].astype(np.uint16), dlc[keep].astype(np.uint8), data[keep].copy(),
                    injected[keep].copy())
    return frames, info


FILE_NAMES: dict[str | None, str] = {
    "DoS": "DoS_dataset.csv", "Fuzzy": "Fuzzy_dataset.csv", "RPM": "RPM_dataset.csv",
    "gear": "gear_dataset.csv", None: "normal_run_data.txt",
}
"""The Car-Hacking file names (the synthetic dataset uses the same names and formats)."""


def write_synthetic_dataset(out_dir: Path, cfg: SynthConfig | None = None,
                            attacks: tuple[str | None, ...] = ("DoS", "Fuzzy", "RPM", "gear", None),
                            ) -> dict[str, SynthInfo]:
    """Write a Car-Hacking-style directory: the four attack CSVs and ``normal_run_data.txt``."""
    cfg = cfg or SynthConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    infos: dict[str, SynthInfo] = {}
    for attack in attacks:
        frames, info = generate(attack, cfg)
        name = FILE_NAMES[attack]
        if attack is None:
            write_car_hacking_text(frames, out_dir / name)
        else:
            write_car_hacking_csv(frames, out_dir / name)
        infos[name] = info
    return infos
