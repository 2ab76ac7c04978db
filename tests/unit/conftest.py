"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeKube


@pytest.fixture
def fake_kube() -> FakeKube:
    """Return a fake API answering with the captured healthy cluster."""
    return FakeKube()
