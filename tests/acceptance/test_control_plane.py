"""API server ready, etcd healthy, CoreDNS answering from a pod."""

from __future__ import annotations

import pytest

from harness.checks import CheckResult
from tests.acceptance.verdict import assert_passed, check_names


@pytest.mark.parametrize("check", check_names("control_plane"))
def test_control_plane(verification: dict[str, list[CheckResult]], check: str) -> None:
    assert_passed(check, verification.get(check))
