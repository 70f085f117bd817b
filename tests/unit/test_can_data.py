"""CAN data: Car-Hacking readers, python-can logs, the synthetic generator, windowing and splits."""

from __future__ import annotations

import numpy as np
import pytest

from hwkit.data.can import (
    CanDataError,
    Frames,
    read_can_log,
    read_car_hacking_csv,
    read_car_hacking_text,
    read_frames,
    write_car_hacking_csv,
)
from hwkit.data.synth import ATTACKS, SynthConfig, frame_bits, generate, write_synthetic_dataset
from hwkit.data.windows import LabelledFile, load_directory, make_windows, split_windows

# --- Car-Hacking CSV -------------------------------------------------------------------------------

RAGGED = """\
1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R
1478198376.389636,018f,8,fe,5b,00,00,00,3c,00,00,R
1478198376.389864,02b0,5,ff,7f,00,05,49,T
1478198376.390078,018e,2,7b,c1,R
1478198376.390300,0545,2,d8,00,T,,,,,,
not a frame at all
1478198376.390500,0260,8,19,21,22,30,08,8e,6d,3a
1478198376.390700,0260,9,19,21,22,30,08,8e,6d,3a,00,R
1478198376.390900,0260,8,19,21,2x,30,08,8e,6d,3a,R
1478198376.391100,0260,2,19,21,X
1478198376.391300,1fff,2,19,21,R
1478198376.391500,0000,0,T
"""


def test_ragged_csv_reads_flag_at_3_plus_dlc_and_zero_pads(tmp_path):
    path = tmp_path / "DoS_dataset.csv"
    path.write_text(RAGGED)
    frames, rep = read_car_hacking_csv(path)
    assert len(frames) == 6
    assert frames.can_id.tolist() == [0x316, 0x18F, 0x2B0, 0x18E, 0x545, 0x000]
    assert frames.dlc.tolist() == [8, 8, 5, 2, 2, 0]
    # a fixed 12-column reader would take "R"/"T" from the wrong column for DLC < 8 rows
    assert frames.injected.tolist() == [False, False, True, False, True, True]
    assert frames.data[2].tolist() == [0xFF, 0x7F, 0x00, 0x05, 0x49, 0, 0, 0]
    assert frames.data[3].tolist() == [0x7B, 0xC1, 0, 0, 0, 0, 0, 0]
    assert frames.data[0].tolist() == [0x05, 0x21, 0x68, 0x09, 0x21, 0x21, 0x00, 0x6F]
    assert frames.time_s[0] == pytest.approx(1478198376.389427, abs=1e-7)
    # the malformed lines, each with its number and a reason
    assert rep.malformed_count == 6
    lines = {m.line: m.reason for m in rep.malformed}
    assert sorted(lines) == [6, 7, 8, 9, 10, 11]
    assert "is not R or T" in lines[7] or "needs" in lines[7]
    assert "outside 0..8" in lines[8]
    assert "hexadecimal" in lines[9]
    assert "not R or T" in lines[10]
    assert "11-bit" in lines[11]
    assert rep.injected == 3 and rep.lines == 12
    assert "6 malformed line(s) skipped, first at line 6" in rep.summary()


def test_strict_mode_stops_at_the_first_malformed_line(tmp_path):
    path = tmp_path / "Fuzzy_dataset.csv"
    path.write_text(RAGGED)
    with pytest.raises(CanDataError, match=r"Fuzzy_dataset\.csv:6: expected at least 4"):
        read_car_hacking_csv(path, strict=True)


def test_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(CanDataError, match="not found"):
        read_frames(tmp_path / "missing.csv")
    bad = tmp_path / "RPM_dataset.csv"
    bad.write_text("garbage\nmore garbage\n")
    with pytest.raises(CanDataError, match=r"RPM_dataset\.csv: no CAN frames could be read \(2 lines; first "
                                           r"malformed line 1"):
        read_frames(bad)


# --- normal_run_data.txt ---------------------------------------------------------------------------

NORMAL = """\
Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2
Timestamp: 1479121434.850423        ID: 02c0    000    DLC: 8    14 00 00 00 00 00 00 00

Timestamp: 1479121434.850977        ID: 018e    000    DLC: 2    7b c1
Timestamp: 1479121434.851197        ID: 0430    000    DLC: 8    00 00 00 00 00
Timestamp: nan-ish        ID: 0430    000    DLC: 8    00 00 00 00 00 00 00 00
"""


def test_normal_run_text_layout(tmp_path):
    path = tmp_path / "normal_run_data.txt"
    path.write_text(NORMAL)
    frames, rep = read_car_hacking_text(path)
    assert frames.can_id.tolist() == [0x350, 0x2C0, 0x18E]
    assert frames.data[0].tolist() == [0x05, 0x28, 0x84, 0x66, 0x6D, 0x00, 0x00, 0xA2]
    assert frames.data[2].tolist() == [0x7B, 0xC1, 0, 0, 0, 0, 0, 0]
    assert not frames.injected.any()
    assert [(m.line, m.reason) for m in rep.malformed] == [(5, "DLC 8 but 5 data bytes"),
                                                           (6, "timestamp 'nan-ish' is not a number")]
    with pytest.raises(CanDataError, match=r"normal_run_data\.txt:5: DLC 8 but 5 data bytes"):
        read_frames(path, strict=True)


# --- python-can formats ----------------------------------------------------------------------------

CANDUMP = """\
(1479121434.850202) can0 350#05288466 R
(1479121434.850423) can0 2C0#1400000000000000
this line is not candump
(1479121434.850977) can0 18E#7BC1
(1479121434.851000) can0 18FF0001#00
(1479121434.851197) can0 430#0000000000000000
"""


def test_candump_through_python_can_with_malformed_lines(tmp_path):
    path = tmp_path / "drive.log"
    path.write_text(CANDUMP)
    frames, rep = read_can_log(path)
    assert rep.format == "candump"
    assert frames.can_id.tolist() == [0x350, 0x2C0, 0x18E, 0x430]
    assert frames.dlc.tolist() == [4, 8, 2, 8]
    assert frames.data[0].tolist() == [0x05, 0x28, 0x84, 0x66, 0, 0, 0, 0]
    assert frames.time_s[2] == pytest.approx(1479121434.850977)
    assert [m.line for m in rep.malformed] == [3, 5]
    assert "CanutilsLogReader" in rep.malformed[0].reason
    assert "extended ID 0x18FF0001" in rep.malformed[1].reason
    with pytest.raises(CanDataError, match=r"drive\.log:3: python-can CanutilsLogReader cannot parse it"):
        read_frames(path, strict=True)


ASC = """\
date Mon Nov 21 10:00:00.000 am 2016
base hex  timestamps absolute
internal events logged
// version 9.0.0
Begin Triggerblock Mon Nov 21 10:00:00.000 am 2016
   0.000000 Start of measurement
   0.001000 1  316             Rx   d 8 05 21 68 09 21 21 00 6F
   0.002000 1  18F             Rx   d 8 FE 5B 00 00 00 3C 00 00
   0.003000 1  260             Rx   d 8 19 21 zz 30 08 8E 6D 3A
   0.004000 1  18E             Rx   d 2 7B C1
End TriggerBlock
"""


def test_asc_through_python_can_keeps_reading_after_a_bad_line(tmp_path):
    path = tmp_path / "drive.asc"
    path.write_text(ASC)
    frames, rep = read_frames(path)
    assert rep.format == "asc"
    assert frames.can_id.tolist() == [0x316, 0x18F, 0x18E]
    assert frames.data[2].tolist() == [0x7B, 0xC1, 0, 0, 0, 0, 0, 0]
    assert frames.time_s.tolist() == pytest.approx([0.001, 0.002, 0.004])
    assert [m.line for m in rep.malformed] == [9]


def test_blf_round_trip_and_corrupt_file(tmp_path):
    import can

    path = tmp_path / "drive.blf"
    with can.BLFWriter(str(path)) as w:
        for i in range(50):
            w.on_message_received(can.Message(timestamp=1000.0 + i * 0.01, arbitration_id=0x100 + i,
                                               is_extended_id=False, data=bytes([i] * (i % 9))))
    frames, rep = read_frames(path)
    assert rep.format == "blf" and len(frames) == 50 and rep.malformed_count == 0
    assert frames.can_id.tolist() == [0x100 + i for i in range(50)]
    assert frames.dlc.tolist() == [i % 9 for i in range(50)]
    assert frames.data[10].tolist() == [10] + [0] * 7
    junk = tmp_path / "junk.blf"
    junk.write_bytes(b"not a blf file at all" * 10)
    with pytest.raises(CanDataError, match=r"junk\.blf: not a readable blf log"):
        read_frames(junk)


# --- generator -------------------------------------------------------------------------------------

def _bits_reference(can_id: int, dlc: int, data: list[int]) -> int:
    """Textbook bit-by-bit CAN 2.0A frame length (an independent check of the vectorised version)."""
    stream = [0] + [(can_id >> (10 - k)) & 1 for k in range(11)] + [0, 0, 0] + [(dlc >> (3 - k)) & 1 for k in range(4)]
    for b in data[:dlc]:
        stream += [(b >> (7 - k)) & 1 for k in range(8)]
    crc = 0
    for bit in stream:
        nxt = bit ^ ((crc >> 14) & 1)
        crc = (crc << 1) & 0x7FFF
        if nxt:
            crc ^= 0x4599
    stream += [(crc >> (14 - k)) & 1 for k in range(15)]
    out, run, last = [], 0, None
    for bit in stream:
        out.append(bit)
        run = run + 1 if bit == last else 1
        last = bit
        if run == 5:
            out.append(1 - bit)
            last, run = 1 - bit, 1
    return len(out) + 13


def test_frame_bits_match_a_bit_by_bit_reference():
    rng = np.random.default_rng(1)
    ids = np.concatenate([[0, 0x7FF, 0x316, 0x555], rng.integers(0, 0x800, 200)])
    dlc = np.concatenate([[8, 0, 8, 4], rng.integers(0, 9, 200)])
    data = np.concatenate([np.zeros((2, 8), np.uint8), np.full((2, 8), 0x55, np.uint8),
                           rng.integers(0, 256, (200, 8)).astype(np.uint8)])
    got = frame_bits(ids, dlc, data)
    want = [_bits_reference(int(i), int(d), row.tolist()) for i, d, row in zip(ids, dlc, data)]
    assert got.tolist() == want
    assert got[0] == 127  # all-zero DoS frame: 111 bits + 16 stuff bits, 0.254 ms at 500 kbit/s


def test_generator_is_deterministic_by_seed():
    cfg = SynthConfig(duration_s=10, seed=3)
    a, ia = generate("Fuzzy", cfg)
    b, ib = generate("Fuzzy", cfg)
    c, _ = generate("Fuzzy", SynthConfig(duration_s=10, seed=4))
    for field in ("time_s", "can_id", "dlc", "data", "injected"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert ia == ib
    assert len(a) != len(c) or not np.array_equal(a.data, c.data)


@pytest.mark.parametrize("attack", ["DoS", "Fuzzy", "RPM", "gear"])
def test_attack_rates_ids_and_intrusion_windows(attack):
    cfg = SynthConfig(duration_s=40, seed=0)
    frames, info = generate(attack, cfg)
    spec = ATTACKS[attack]
    assert len(info.intrusions_s) == round(40 * 300 / 2100)  # the paper's density: 300 per 35 min
    for (a, b), (c, _) in zip(info.intrusions_s, info.intrusions_s[1:]):
        assert 3.0 <= b - a <= 5.0 and b < c
    attack_time = sum(b - a for a, b in info.intrusions_s)
    assert info.released["attack"] == pytest.approx(attack_time / spec.period_s, rel=0.01)
    inj = frames.take(frames.injected)
    if spec.can_id is not None:
        assert set(inj.can_id.tolist()) == {spec.can_id}
        assert (inj.data == np.asarray(spec.payload, np.uint8)).all()
    else:
        assert len(set(inj.can_id.tolist())) > 1000  # uniformly random 11-bit IDs
    assert len(inj) == info.sent["attack"]
    gaps = np.diff(inj.time_s)
    gaps = gaps[gaps < 0.1]  # inside one intrusion
    if attack == "DoS":
        # the highest priority: every frame is sent, at the attack rate on average; after a benign frame
        # sneaks in while the bus is idle, DoS frames follow back to back (0.254 ms) to catch up
        assert info.sent["attack"] == info.released["attack"]
        assert np.median(gaps) == pytest.approx(127 / 500_000, rel=0.01)
        assert gaps.mean() == pytest.approx(spec.period_s, rel=0.05)
    else:
        assert np.median(gaps) == pytest.approx(spec.period_s, rel=0.1)
    # injected frames only inside intrusions (times are end-of-frame, so allow one frame of lag)
    rel_t = inj.time_s - 1478198376.0
    inside = np.zeros(rel_t.shape, bool)
    for a, b in info.intrusions_s:
        inside |= (rel_t >= a) & (rel_t <= b + 0.01)
    assert inside.all()


def test_dos_starves_benign_traffic_and_frames_never_overlap():
    cfg = SynthConfig(duration_s=30, seed=0)
    frames, info = generate("DoS", cfg)
    _, normal = generate(None, cfg)
    assert info.sent["attack"] == info.released["attack"]  # ID 0x000 always wins arbitration
    assert info.sent["benign"] < 0.85 * info.released["benign"]  # benign frames dropped
    assert normal.sent["benign"] == normal.released["benign"]  # none dropped without attack
    assert info.benign_delay_ms["inside_intrusions"] > 20 * info.benign_delay_ms["outside_intrusions"]
    assert 0.6 < info.bus_load <= 1.0 and normal.bus_load < 0.4
    # consecutive end-of-frame timestamps are at least one frame length apart (one bus, no overlap)
    dur = frame_bits(frames.can_id, frames.dlc, frames.data) / cfg.bitrate_bps
    assert (np.diff(frames.time_s) >= dur[1:] - 2e-6).all()
    # benign frames per second inside DoS intrusions fall well below the normal rate
    rel_t = frames.time_s - 1478198376.0
    inside = np.zeros(rel_t.shape, bool)
    for a, b in info.intrusions_s:
        inside |= (rel_t >= a) & (rel_t < b)
    attack_time = sum(b - a for a, b in info.intrusions_s)
    benign_rate_inside = (inside & ~frames.injected).sum() / attack_time
    assert benign_rate_inside < 0.7 * normal.released["benign"] / 30


def test_synthetic_dataset_round_trips_through_the_readers(tmp_path):
    cfg = SynthConfig(duration_s=8, seed=2)
    infos = write_synthetic_dataset(tmp_path, cfg)
    assert set(infos) == {"DoS_dataset.csv", "Fuzzy_dataset.csv", "RPM_dataset.csv", "gear_dataset.csv",
                          "normal_run_data.txt"}
    files, skipped = load_directory(tmp_path, strict=True)
    assert [f.name for f in files] == ["DoS_dataset.csv", "Fuzzy_dataset.csv", "RPM_dataset.csv",
                                       "normal_run_data.txt"]
    assert skipped == ["gear_dataset.csv (gear spoofing is not a CQMLP class)"]
    assert [f.label for f in files] == [1, 2, 3, 0]
    want, _ = generate("RPM", cfg)
    got = files[2].frames
    assert np.array_equal(got.can_id, want.can_id) and np.array_equal(got.data, want.data)
    assert np.array_equal(got.injected, want.injected) and np.allclose(got.time_s, want.time_s, atol=1e-6)
    assert (got.dlc < 8).any()  # ragged rows were written and read back


def test_directory_with_flags_but_no_attack_name_is_an_error(tmp_path):
    frames, _ = generate("RPM", SynthConfig(duration_s=8))
    write_car_hacking_csv(frames, tmp_path / "capture.csv")
    with pytest.raises(CanDataError, match=r"capture\.csv: \d+ frames flagged T, but the file name"):
        load_directory(tmp_path)


# --- windows, labels, splits -----------------------------------------------------------------------

def _frames(ids: list[int], injected: list[bool]) -> Frames:
    n = len(ids)
    data = (np.arange(n * 8) % 256).astype(np.uint8).reshape(n, 8)
    return Frames(np.arange(n, dtype=float), np.asarray(ids, np.uint16), np.full(n, 8, np.uint8), data,
                  np.asarray(injected))


def test_window_features_and_conservative_labels():
    fr = _frames([0x316, 0x18F, 0x000, 0x2B0, 0x43F, 0x5A0], [False, False, True, False, False, False])
    w = make_windows(fr, label=1, window=4)
    assert w.x.shape == (3, 40) and w.x.dtype == np.uint8
    assert w.x[0, :10].tolist() == [0x03, 0x16, 0, 1, 2, 3, 4, 5, 6, 7]
    assert w.x[0, 10:12].tolist() == [0x01, 0x8F]
    assert w.x[1, 30:40].tolist() == [0x04, 0x3F] + list(range(32, 40))  # oldest -> newest
    assert w.y.tolist() == [1, 1, 1]  # every window holds the injected frame 2
    w2 = make_windows(fr, label=1, window=2)
    assert w2.y.tolist() == [0, 1, 1, 0, 0]
    assert make_windows(fr, label=1, window=2, stride=2).first_frame.tolist() == [0, 2, 4]


def _two_files() -> list[LabelledFile]:
    a = _frames([0x100 + (i % 7) for i in range(400)], [(i // 40) % 2 == 1 for i in range(400)])
    b = _frames([0x600 + (i % 5) for i in range(300)], [False] * 300)
    from hwkit.data.can import ReadReport

    rep = ReadReport("x", "synthetic", 0, 0, 0, 0)
    return [LabelledFile("DoS_dataset.csv", 1, a, rep), LabelledFile("normal_run_data.txt", 0, b, rep)]


def test_time_split_shares_no_frame_and_windows_never_cross_files():
    files = _two_files()
    sp = split_windows(files, window=4, mode="time")
    covered: dict[str, set[tuple[int, int]]] = {}
    for name in ("train", "val", "test"):
        part = getattr(sp, name)
        covered[name] = {(int(f), int(s) + k) for f, s in zip(part.file_index, part.first_frame) for k in range(4)}
        # the ID high byte says which file a frame came from: one file per window
        hi = part.x[:, 0::10]
        assert (hi == hi[:, :1]).all()
    assert not covered["train"] & covered["val"]
    assert not covered["val"] & covered["test"]
    assert not covered["train"] & covered["test"]
    for f in (0, 1):  # train precedes val precedes test inside every file
        tr = max(s for fi, s in covered["train"] if fi == f)
        va = [s for fi, s in covered["val"] if fi == f]
        te = min(s for fi, s in covered["test"] if fi == f)
        assert tr < min(va) and max(va) < te
    assert sp.dropped_windows == 2 * 2 * 3  # 3 windows straddle each of the 2 cuts in each of 2 files
    assert sum(sp.sizes().values()) + sp.dropped_windows == (400 - 3) + (300 - 3)


def test_random_split_fractions_and_leakage_is_possible():
    files = _two_files()
    sp = split_windows(files, window=4, mode="random", seed=1)
    sizes = sp.sizes()
    assert sum(sizes.values()) == 397 + 297 and sp.dropped_windows == 0
    assert sizes["train"] == round(0.85 * 694) and sizes["val"] == round(0.10 * 694)
    # overlapping neighbours land on both sides (this is why the time split is the default)
    train = set(zip(sp.train.file_index.tolist(), sp.train.first_frame.tolist()))
    assert any((f, s + 1) in train for f, s in zip(sp.test.file_index.tolist(), sp.test.first_frame.tolist()))
    with pytest.raises(ValueError, match="fractions"):
        split_windows(files, fractions=(0.8, 0.1, 0.2))
