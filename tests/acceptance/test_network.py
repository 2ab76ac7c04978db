"""A pod on one worker reaches a pod on the other by IP; Flannel on the private NIC."""

from __future__ import annotations

import pytest

from harness.checks import CheckResult
from tests.acceptance.verdict import assert_passed, check_names


@pytest.mark.parametrize("check", check_names("network"))
def test_network(verification: dict[str, list[CheckResult]], check: str) -> None:
    assert_passed(check, verification.get(check))
