"""Fixtures of the bundle tests: the built bundle, a private containerd and dockerd.

Both daemons are stopped, and their directories removed, when the session ends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundle_daemons import (
    CONTAINERD_CONFIG,
    Containerd,
    Docker,
    need_root,
    running,
)

from harness.bundle.build import Build, Pins, normalise_version
from harness.bundle.command import configured_versions
from harness.cache import cache_root


def pins() -> Pins:
    """Return the versions the bundle under test is built with."""
    configured = configured_versions()
    version = os.environ.get("MINICLUSTER_KUBERNETES_VERSION") or configured.get(
        "kubernetes", Pins().kubernetes
    )
    return Pins(
        kubernetes=normalise_version(version),
        flannel=configured.get("flannel", Pins().flannel),
    )


@pytest.fixture(scope="session")
def bundle_build() -> Build:
    """Return the bundle build of this version, building what is not cached."""
    build = Build(pins(), cache_root())
    build.run()
    return build


@pytest.fixture(scope="session")
def bundle(bundle_build: Build) -> Path:
    """Return the finished bundle's version directory."""
    return bundle_build.bundle


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """Return a containerd of our own, stopped and removed after the session."""
    need_root("containerd", "ctr", "runc")
    # A short path: the socket's must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="mc-ctrd-"))
    config = directory / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(dir=directory))
    daemon = Containerd(directory / "containerd.sock")
    argv = ["containerd", "--config", str(config)]
    with running(argv, directory, lambda: daemon.ctr("version").returncode == 0, 30):
        yield daemon


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Docker]:
    """Return a dockerd of our own (no bridge, no iptables), removed afterwards."""
    need_root("dockerd", "docker")
    directory = Path(tempfile.mkdtemp(prefix="mc-dockerd-"))
    host = f"unix://{directory}/docker.sock"
    argv = [
        "dockerd",
        "--host",
        host,
        "--data-root",
        str(directory / "data"),
        "--exec-root",
        str(directory / "exec"),
        "--pidfile",
        str(directory / "docker.pid"),
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    daemon = Docker(host)
    with running(argv, directory, lambda: daemon.docker("info").returncode == 0, 60):
        yield daemon
