"""Design-space exploration (``hwkit explore``): multi-objective Optuna search over compression and
hardware settings, on one machine or many sharing one study.

    from hwkit.explore import load_config, explore, summarize, best
    cfg = load_config("examples/explore-cqmlp.toml")
    explore(cfg, Path("explore/cqmlp"))            # trials until the budget is reached
    doc = summarize(cfg, Path("explore/cqmlp"))    # summary.json / summary.md / report.html
    record, report = best(cfg, Path("explore/cqmlp"))

See docs/explore.md. Optuna and torch are imported only when trials run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwkit.explore.config import ExploreConfig, ExploreConfigError, ExploreError, load_config, parse_config

__all__ = ["ExploreConfig", "ExploreConfigError", "ExploreError", "best", "explore", "load_config", "parse_config",
           "summarize", "with_overrides"]


def with_overrides(cfg: ExploreConfig, trials: int | None = None, study_name: str | None = None) -> ExploreConfig:
    """``cfg`` with the command line's budget and study name."""
    if trials is not None:
        if trials < 1:
            raise ExploreConfigError(f"--trials must be >= 1, got {trials}")
        cfg = dataclasses.replace(cfg, trials=trials)
    if study_name is not None:
        if not study_name.strip():
            raise ExploreConfigError("--study-name must not be empty")
        cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, name=study_name))
    return cfg


def explore(cfg: ExploreConfig, out: Path, storage: str | None = None, log: Callable[[str], None] = lambda s: None,
            worker_index: int = 0) -> Any:
    """Run one worker until the study holds ``cfg.trials`` finished trials; returns a WorkerResult."""
    from hwkit.explore.run import run_worker, storage_url

    return run_worker(cfg, out, storage_url(out, storage), log, worker_index)


def summarize(cfg: ExploreConfig, out: Path, storage: str | None = None) -> dict[str, Any]:
    """Write ``out``/summary.json, summary.md and report.html from the study; returns the summary."""
    from hwkit.explore.run import _redact, open_study, storage_url, trial_rows
    from hwkit.explore.summary import build_summary, write_summary
    from hwkit.flow import tool_versions

    url = storage_url(out, storage)
    study = open_study(cfg, url, create=False)
    tools = tool_versions()
    from importlib import metadata

    tools["optuna"] = metadata.version("optuna")
    doc = build_summary(cfg, trial_rows(study, cfg), _redact(url), tools)
    out.mkdir(parents=True, exist_ok=True)
    write_summary(doc, out)
    return doc


def best(cfg: ExploreConfig, out: Path, storage: str | None = None, pick: int | None = None,
         log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, Any], Any]:
    """Export the chosen design to ``out``/best/ and compile it (see hwkit.explore.front.BEST_RULE)."""
    from hwkit.explore.run import check_target, export_best, open_study, storage_url, trial_rows

    check_target(cfg)
    study = open_study(cfg, storage_url(out, storage), create=False)
    return export_best(cfg, out, trial_rows(study, cfg), pick, log)
