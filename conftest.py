"""Session fixtures of the acceptance suite: the cluster, its nodes, the API.

Plain ``pytest`` attaches to the cluster that ``vagrant up`` (or ``minicluster
up``) made; ``--up`` brings it up first and ``--destroy`` tears it down at the
end. With no cluster ever created the acceptance tests skip, saying how to make
one; ``--require-cluster`` (or MINICLUSTER_REQUIRE_CLUSTER=1, as ``tox -e
verify`` sets) makes that a failure instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from harness.checks import CheckResult, Context, load_all, run_checks
from harness.errors import HarnessError, NoCluster

logger = logging.getLogger("harness.conftest")

HOW_TO_MAKE_ONE = "run `minicluster up` (or `vagrant up`), or `pytest --up`"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minicluster")
    group.addoption("--up", action="store_true", help="bring the cluster up first")
    group.addoption(
        "--destroy", action="store_true", help="destroy the cluster at the end"
    )
    group.addoption(
        "--require-cluster",
        action="store_true",
        default=os.environ.get("MINICLUSTER_REQUIRE_CLUSTER") == "1",
        help="fail instead of skipping when there is no cluster",
    )
    group.addoption("--provider", help="the Vagrant provider for --up")


def _no_cluster(config: pytest.Config, reason: str) -> None:
    message = f"{reason}; {HOW_TO_MAKE_ONE}"
    if config.getoption("--require-cluster"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest) -> Any:
    """Return the validated settings of this checkout."""
    from harness import settings as settings_module

    try:
        return settings_module.load(provider=request.config.getoption("--provider"))
    except settings_module.SettingsError as exc:
        pytest.fail(f"invalid settings:\n{exc}", pytrace=False)


def _bring_up(settings: Any) -> None:
    from harness.vagrant import Vagrant, parse_progress

    log = settings.shared_dir / "up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        for line in Vagrant(settings.root, settings.provider).up():
            out.write(line)
            progress = parse_progress(line)
            if progress and not progress.output:
                logger.info("%s: %s", progress.node, progress.phase)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, settings: Any) -> Iterator[Any]:
    """Return the running cluster (``harness.cluster.Cluster``), attached once."""
    from harness.cluster import attach

    config = request.config
    if config.getoption("--up"):
        _bring_up(settings)
    try:
        attached = attach(settings)
        if config.getoption("--up"):
            attached.wait_ready()
    except NoCluster as exc:
        _no_cluster(config, exc.reason)
    except HarnessError as exc:
        pytest.fail(f"cannot attach to the cluster: {exc}", pytrace=False)
    yield attached
    attached.close()
    if config.getoption("--destroy"):
        # Already destroyed is fine: vagrant destroy --force says so and exits 0.
        attached.vagrant.destroy()


@pytest.fixture(scope="session")
def nodes(settings: Any) -> list[Any]:
    """Return the nodes of the settings (name, role, address, ...)."""
    return list(settings.nodes)


@pytest.fixture(scope="session")
def kube(cluster: Any) -> Any:
    """Return the Kubernetes API client (``harness.kube.Kube``)."""
    from harness.kube import Kube

    return Kube(cluster.kubeconfig)


@pytest.fixture(scope="session")
def remote(cluster: Any) -> dict[str, Any]:
    """Return the per-node remote runner (``harness.remote.Host``) by node name."""
    return dict(cluster.hosts)


@pytest.fixture(scope="session")
def check_context(cluster: Any) -> Context:
    """Return the checks' context over the running cluster."""
    ctx: Context = cluster.context()
    return ctx


@pytest.fixture(scope="session")
def verification(check_context: Context) -> dict[str, list[CheckResult]]:
    """Return every check's rows, from one parallel run of them all."""
    rows = run_checks(check_context, list(load_all().values()))
    by_check: dict[str, list[CheckResult]] = {}
    for row in rows:
        by_check.setdefault(row.name, []).append(row)
    return by_check
