"""The acceptance tests: thin views of one verification run of every check."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/acceptance" in str(item.path):
            item.add_marker(pytest.mark.acceptance)
