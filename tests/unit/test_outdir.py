"""Output-directory ownership (issue 15): hwkit removes only what the current run created."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hwkit.errors import InputError
from hwkit.outdir import MARKER, claim
from tests.conftest import ROOT

CQMLP = ROOT / "examples" / "cqmlp_w2a2_synthetic.pt"


def _snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_foreign_nonempty_directory_is_refused_and_kept(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not written by hwkit"):
        claim(demo, "compile")
    assert _snapshot(demo) == {"notes.txt": b"precious"}


def test_forced_claim_rolls_back_only_new_entries(tmp_path):
    demo = tmp_path / "demo"
    (demo / "sub").mkdir(parents=True)
    (demo / "notes.txt").write_text("precious")
    (demo / "sub" / "keep.bin").write_bytes(b"\x00\x01")
    owned = claim(demo, "compile", force=True)
    (demo / "passes").mkdir()
    (demo / "passes" / "x").write_text("new")
    (demo / "hwkit.log").write_text("log")
    owned.rollback()
    assert _snapshot(demo) == {"notes.txt": b"precious", "sub/keep.bin": b"\x00\x01"}


def test_new_directory_and_parents_removed_on_rollback(tmp_path):
    owned = claim(tmp_path / "a" / "b" / "c", "compile")
    assert (tmp_path / "a" / "b" / "c" / MARKER).is_file()
    owned.rollback()
    assert list(tmp_path.iterdir()) == []


def test_marked_and_empty_directories_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    claim(empty, "compile").rollback()
    assert empty.is_dir() and list(empty.iterdir()) == []  # the user's empty directory itself stays
    ours = tmp_path / "ours"
    claim(ours, "compile")
    (ours / "report.json").write_text("{}")
    again = claim(ours, "compile")  # an earlier hwkit run: accepted
    again.rollback()
    assert (ours / "report.json").exists() and (ours / MARKER).exists()


def test_parent_is_a_file_and_read_only(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="f/out"):
        claim(tmp_path / "f" / "out", "compile")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits
            pytest.skip("running as a user that can write into a read-only directory (root)")
        with pytest.raises(InputError, match="cannot write"):
            claim(ro / "out", "compile")
    finally:
        os.chmod(ro, 0o700)


@pytest.mark.parametrize("out", ["demo", "."])
def test_cli_compile_never_deletes_user_directory(tmp_path, out):
    """The issue's reproduction: a failed compile into a user's directory leaves it as it was."""
    work = tmp_path / "proj"
    (work / "demo").mkdir(parents=True)
    (work / "demo" / "notes.txt").write_text("precious\n")
    (work / "setup.cfg").write_text("[x]\n")
    before = _snapshot(work)
    proc = subprocess.run([sys.executable, "-m", "hwkit.cli", "compile", str(CQMLP), "--target", "zcu104",
                           "--out", out, "--from", "finn.streamline"], cwd=work, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "not written by hwkit" in proc.stderr and "Traceback" not in proc.stderr
    assert _snapshot(work) == before
    forced = subprocess.run([sys.executable, "-m", "hwkit.cli", "compile", str(CQMLP), "--target", "zcu104",
                             "--out", out, "--from", "finn.streamline", "--force"], cwd=work, capture_output=True,
                            text=True, timeout=300)
    assert forced.returncode == 2 and "cannot resume" in forced.stderr
    assert _snapshot(work) == before  # even with --force nothing that was there is touched


def test_report_files_are_strict_json_and_written_together(tmp_path):
    from hwkit.report import REPORT_FILES, strict_json

    doc = strict_json({"a": float("nan"), "q": {"value": float("inf"), "unit": "W", "source": "derived"},
                       "l": [1.0, float("-inf")]})
    text = json.dumps(doc, allow_nan=False)
    assert doc["a"] is None and doc["q"]["value"] is None and "non-finite" in doc["q"]["note"]
    assert doc["l"] == [1.0, None] and "NaN" not in text
    assert set(REPORT_FILES) == {"report.json", "report.md", "report.html"}
