"""Fixtures of the integration tests: a lab of SSH hosts made and removed here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.checks import Context
from harness.remote import Host, close_all
from tests.integration.lab import Lab, missing_prerequisites


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Return three SSH hosts in their own namespaces, removed at the end."""
    problems = missing_prerequisites()
    if problems:
        reason = "integration lab impossible here: " + "; ".join(problems)
        if os.environ.get("MINICLUSTER_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    made = Lab(Path(tmp_path_factory.mktemp("lab")))
    made.start()
    yield made
    made.stop()


@pytest.fixture
def hosts(lab: Lab) -> Iterator[dict[str, Host]]:
    """Return a harness Host per lab host, with its connection closed after."""
    runners = lab.runners()
    yield runners
    close_all(runners)


@pytest.fixture
def ctx(lab: Lab, hosts: dict[str, Host]) -> Context:
    """Return the checks' context over the lab: real settings, real SSH."""
    return Context(lab.settings(), hosts, probe_timeout_s=3)


@pytest.fixture
def root_on(hosts: dict[str, Host]) -> Iterator[dict[str, Host]]:
    """Return separate root shells on the hosts, to make and undo faults."""
    shells = {
        name: Host(name, h.address, 22, "root", h.key_filename)
        for name, h in hosts.items()
    }
    yield shells
    close_all(shells)
