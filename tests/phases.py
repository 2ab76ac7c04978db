"""Runs made of phases: the e2e and storage suites, and their benchmarks.

Each test of such a suite is one phase, run in file order. :class:`Phases`
times them and writes ``phases.json`` after each one, so an interrupted run
still leaves its figures; :class:`PhaseGate` skips the phases after the first
failure, except those marked ``always`` (the teardown).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

logger = logging.getLogger(__name__)

ALWAYS_MARKER = "always: runs even after an earlier phase failed"


@dataclass
class Phases:
    """The time of each phase of a run, written to ``path`` after each one."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``; a failed phase is recorded as such."""
        logger.info("=== phase %s", name)
        started = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record(name, time.monotonic() - started, ok)

    def record(self, name: str, seconds: float, ok: bool = True) -> None:
        """Record phase ``name``, timed elsewhere, and write the file."""
        self.rows.append({"phase": name, "seconds": round(seconds, 1), "ok": ok})
        logger.info(
            "=== phase %s %s in %.1f s", name, "done" if ok else "FAILED", seconds
        )
        self.write()

    def seconds(self, name: str) -> float:
        return float(sum(r["seconds"] for r in self.rows if r["phase"] == name))

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "phases": self.rows,
            "total_s": round(sum(r["seconds"] for r in self.rows), 1),
        }
        self.path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


class PhaseGate:
    """Skips every phase after the first that failed, but those marked always."""

    def __init__(self) -> None:
        self.failed: str | None = None

    def setup(self, item: pytest.Item) -> None:
        """Skip ``item`` if an earlier phase failed and it is not marked always."""
        if self.failed and item.get_closest_marker("always") is None:
            pytest.skip(f"an earlier phase failed: {self.failed}")

    def report(self, item: pytest.Item, call: pytest.CallInfo[None]) -> None:
        """Remember ``item`` as the failed phase if its call failed first."""
        failed = call.excinfo is not None and not call.excinfo.errisinstance(
            pytest.skip.Exception
        )
        if call.when == "call" and failed and self.failed is None:
            self.failed = item.name
