"""Turn a check's rows into a test outcome: fail, skip, or pass."""

from __future__ import annotations

import pytest

from harness.checks import CheckResult, load_all
from harness.report import table


def check_names(area: str) -> list[str]:
    """Return the registered checks of ``area`` ("hosts", "nodes", ...)."""
    return [c.name for c in load_all().values() if c.area == area]


def assert_passed(name: str, rows: list[CheckResult] | None) -> None:
    """Fail with the table of failed rows; skip when every row skipped."""
    __tracebackhide__ = True
    if not rows:
        pytest.fail(f"check {name} produced no result", pytrace=False)
    bad = [r for r in rows if r.failed]
    if bad:
        pytest.fail("\n" + table(bad), pytrace=False)
    if all(r.skipped for r in rows):
        pytest.skip("; ".join(f"{r.node}: {r.seen}" for r in rows))
