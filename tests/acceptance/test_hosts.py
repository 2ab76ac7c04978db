"""Swap off, ip_forward and bridge-nf on, systemd cgroup drivers, services active."""

from __future__ import annotations

import pytest

from harness.checks import CheckResult
from tests.acceptance.verdict import assert_passed, check_names


@pytest.mark.parametrize("check", check_names("hosts"))
def test_hosts(verification: dict[str, list[CheckResult]], check: str) -> None:
    assert_passed(check, verification.get(check))
