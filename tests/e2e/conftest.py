"""Fixtures of the end-to-end run: the Docker daemon, the run and its phase times.

The tests of ``test_e2e.py`` are the run's phases, in file order. Once one fails,
the later ones are skipped (they would only fail for the same reason), except
those marked ``always``, such as the final teardown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import dockerhost
from tests.e2e.driver import Run, StepFailed, run_environment
from tests.phases import ALWAYS_MARKER, PhaseGate, Phases

logger = logging.getLogger("tests.e2e")

ROOT = Path(__file__).resolve().parents[2]
_GATE = PhaseGate()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minicluster e2e")
    group.addoption(
        "--keep-cluster",
        action="store_true",
        help="leave the cluster up at the end (skips the teardown phase)",
    )
    group.addoption(
        "--e2e-results",
        type=Path,
        default=Path(os.environ.get("MINICLUSTER_E2E_RESULTS", ROOT / "results/e2e")),
        help="where logs, verify reports and phase times go (default: %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", ALWAYS_MARKER)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _GATE.setup(item)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    _GATE.report(item, call)


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest) -> Path:
    """Return the results directory of this run."""
    path: Path = request.config.getoption("--e2e-results")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def phases(results: Path) -> Phases:
    """Return the phase clock; it writes ``phases.json`` after each phase."""
    return Phases(results / "phases.json")


@pytest.fixture(scope="session", autouse=True)
def _host_sysctls() -> Iterator[None]:
    """Give this machine back the kernel settings the nodes' kubelets change."""
    saved = dockerhost.read_sysctls()
    yield
    dockerhost.restore_sysctls(saved)


@pytest.fixture(scope="session")
def docker_daemon(results: Path) -> Iterator[dockerhost.Daemon]:
    """Return the Docker daemon (started here if none runs), isolated from outside."""
    daemon = dockerhost.start_daemon(results / "dockerd.log")
    try:
        dockerhost.isolate(daemon)
        yield daemon
    finally:
        dockerhost.stop_daemon(daemon)


@pytest.fixture(scope="session")
def e2e(
    request: pytest.FixtureRequest, docker_daemon: dockerhost.Daemon, results: Path
) -> Iterator[Run]:
    """Return the run in this checkout; its nodes are destroyed at the end."""
    # The bundle phase adds the bundle: the settings refuse one not built yet.
    env = run_environment(
        os.environ, privileged=dockerhost.can_run_privileged(), bundle=None
    )
    run = Run(ROOT, results, env)
    yield run
    if request.config.getoption("--keep-cluster"):
        logger.info("--keep-cluster: the nodes stay up")
        return
    try:
        run.vagrant("destroy", "--force")
    except StepFailed as exc:
        # Already destroyed is fine; anything else shows in the teardown phase.
        logger.warning("final vagrant destroy: %s", exc)


@pytest.fixture(scope="session")
def e2e_settings(e2e: Run) -> Any:
    """Return the settings of the run's environment (docker, before the bundle)."""
    from harness import settings

    return settings.load(ROOT, environ=e2e.env, provider="docker")
