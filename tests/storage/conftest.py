"""Fixtures of the storage run: this machine's libvirt, the run, its phase times.

The tests of ``test_storage.py`` are the run's phases, in file order. Once one
fails, the later ones are skipped (they would fail for the same reason), except
those marked ``always``, such as the final teardown.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.remote import close_all
from tests.phases import ALWAYS_MARKER, PhaseGate, Phases
from tests.storage import driver

logger = logging.getLogger("tests.storage")

_GATE = PhaseGate()
# What the storage run needs on this machine, and where it comes from.
COMMANDS = {
    "vagrant": "vagrant",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
    "qemu-img": "qemu-utils",
}
VAGRANT_LIBVIRT = Path("/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minicluster storage")
    group.addoption(
        "--keep-vms",
        action="store_true",
        help="leave the VMs up at the end (skips the teardown phase)",
    )
    group.addoption(
        "--storage-results",
        type=Path,
        default=Path(
            os.environ.get(
                "MINICLUSTER_STORAGE_RESULTS", driver.ROOT / "results/storage"
            )
        ),
        help="where logs, check reports and phase times go (default: %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", ALWAYS_MARKER)
    # A rebooting node resets its SSH connection; paramiko logs that at ERROR
    # although the harness reconnects (and fails the wait if it cannot).
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _GATE.setup(item)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    _GATE.report(item, call)


def _missing_prerequisites() -> list[str]:
    missing = [
        f"{command} (apt-get install {package})"
        for command, package in COMMANDS.items()
        if shutil.which(command) is None
    ]
    if not VAGRANT_LIBVIRT.exists() and not list(
        Path.home().glob(".vagrant.d/gems/*/gems/vagrant-libvirt-*")
    ):
        missing.append("the vagrant-libvirt plugin (apt-get install vagrant-libvirt)")
    return missing


@dataclass
class State:
    """What the phases hand on to each other."""

    results: Path
    phases: Phases
    host: driver.HostState | None = None
    run: driver.StorageRun | None = None
    ctx: Any = None
    box_built: bool = False
    torn_down: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def state(request: pytest.FixtureRequest) -> Iterator[State]:
    """Return the run's shared state; undo the host changes if no phase did."""
    if os.geteuid() != 0:
        pytest.fail(
            "the storage run needs root: it builds the box (losetup, chroot) and "
            "drives libvirt's system daemon; run `sudo tox -e storage`",
            pytrace=False,
        )
    missing = _missing_prerequisites()
    if missing:
        pytest.fail(f"missing: {', '.join(missing)}", pytrace=False)
    results: Path = request.config.getoption("--storage-results")
    results.mkdir(parents=True, exist_ok=True)
    state = State(results, Phases(results / "phases.json"))
    with ExitStack() as stack:
        try:
            stack.enter_context(driver.exclusive())
        except HarnessError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield state
        _clean_up(state, request.config.getoption("--keep-vms"))


def _clean_up(state: State, keep: bool) -> None:
    if state.torn_down or keep:
        return
    # A phase raised before the teardown phase ran: clean up anyway.
    logger.warning("the teardown phase did not run; destroying the VMs now")
    if state.ctx is not None:
        close_all(state.ctx.hosts)
    for problem in driver.tear_down(state.run, state.host):
        logger.warning("%s", problem)
