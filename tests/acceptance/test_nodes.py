"""Every node registered and Ready, with its role, InternalIP and pinned kubelet."""

from __future__ import annotations

import pytest

from harness.checks import CheckResult
from tests.acceptance.verdict import assert_passed, check_names


@pytest.mark.parametrize("check", check_names("nodes"))
def test_nodes(verification: dict[str, list[CheckResult]], check: str) -> None:
    assert_passed(check, verification.get(check))
