"""The demo available on both workers; NodePort and ClusterIP answer with its page."""

from __future__ import annotations

import pytest

from harness.checks import CheckResult
from tests.acceptance.verdict import assert_passed, check_names


@pytest.mark.parametrize("check", check_names("nginx"))
def test_nginx(verification: dict[str, list[CheckResult]], check: str) -> None:
    assert_passed(check, verification.get(check))
