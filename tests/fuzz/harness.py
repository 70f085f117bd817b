"""Shared helpers of the fuzz suite and the regression corpus (issue 15).

Every bad-input case runs ``hwkit`` (in-process through :func:`hwkit.cli.main`, or as a subprocess)
and checks the same contract: the documented exit code, exactly one error line that names the
culprit, no traceback, every pre-existing file byte-identical, and no report file left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

EXIT_CODES = {"bad input": 2, "unsupported": 3, "verification": 4, "tool": 5, "bug": 1, "interrupted": 130}
"""The documented table (README, docs/errors.md)."""

REPORT_NAMES = ("report.json", "report.md", "report.html", "prune_report.json", "prune_report.md",
                "shiftadd_report.json", "shiftadd_report.md", "summary.json")
_ERROR_LINE = re.compile(r"^hwkit(?: [\w-]+)?: (?:internal )?error: ", re.MULTILINE)


@dataclass(frozen=True)
class Result:
    """What one hwkit invocation did."""

    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        """Lines that report an error (argparse's and hwkit's)."""
        return [ln for ln in self.err.splitlines() if _ERROR_LINE.match(ln)]


def run_inprocess(argv: list[str]) -> Result:
    """``hwkit ARGV`` in this process; stdout and stderr captured."""
    from hwkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(int(code), out.getvalue(), err.getvalue())


def run_subprocess(argv: list[str], cwd: Path | None = None, timeout: float = 300) -> Result:
    """``python -m hwkit.cli ARGV`` in a fresh process (imports the hwkit under test)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "hwkit.cli", *[str(a) for a in argv]], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (files themselves allowed) with its bytes."""
    out: dict[str, bytes] = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.read_bytes()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = p.read_bytes()
    return out


def leftover_reports(*dirs: Path) -> list[str]:
    """Report files (and temporaries) found under ``dirs``."""
    found = []
    for d in dirs:
        if d.is_dir():
            found += [str(p) for p in d.rglob("*") if p.name in REPORT_NAMES or p.name.endswith(".tmp")]
    return found


def check_failure(res: Result, code: int, culprit: str | tuple[str, ...], before: dict[str, bytes] | None = None,
                  roots: tuple[Path, ...] = (), out_dirs: tuple[Path, ...] = ()) -> None:
    """The contract of every bad-input case (see the module docstring)."""
    text = res.out + res.err
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    assert res.code == code, f"exit {res.code}, expected {code}: {res.err.strip()}"
    lines = res.error_lines()
    assert len(lines) == 1, f"expected one error line, got {lines!r}\n{res.err}"
    culprits = (culprit,) if isinstance(culprit, str) else culprit
    assert any(c in lines[0] for c in culprits), f"{lines[0]!r} does not name any of {culprits}"
    if before is not None:
        assert snapshot(*roots) == before, "pre-existing files changed or were removed"
    left = leftover_reports(*out_dirs)
    assert not left, f"report files left behind: {left}"
