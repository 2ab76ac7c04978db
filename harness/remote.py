"""Commands on the nodes over SSH: one fabric connection per node, reused.

Nodes come from ``vagrant ssh-config`` (:func:`hosts_from_vagrant`) or are given
explicitly (:func:`Host` with an address, a port, a user and a key), so the same
code runs against the VMs, the docker nodes or any OpenSSH server.
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from harness.errors import CommandFailed, ConnectionFailed, Result
from harness.vagrant import SSHInfo, Vagrant

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 60
MAX_CHANNELS = 4


class Host:
    """A node reached over SSH; ``run`` never raises on a non-zero exit."""

    def __init__(
        self,
        name: str,
        address: str,
        port: int = 22,
        user: str = "vagrant",
        key_filename: str = "",
        sudo: bool | None = None,
        connect_timeout: int = CONNECT_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.user = user
        self.key_filename = key_filename
        # Checks read root-only state (units, sysctls); a non-root user gets sudo.
        self.sudo = (user != "root") if sudo is None else sudo
        self.connect_timeout = connect_timeout
        self._connection: Connection | None = None
        self._lock = threading.Lock()  # guards opening the connection
        # Commands run as channels of the one connection; sshd allows 10 at
        # once by default (MaxSessions), so stay well below.
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.user}@{self.address}:{self.port})"

    @classmethod
    def from_ssh_info(cls, info: SSHInfo) -> Host:
        return cls(info.name, info.host, info.port, info.user, info.key_filename)

    @property
    def connection(self) -> Connection:
        with self._lock:
            return self._open()

    def _open(self) -> Connection:
        if self._connection is None:
            # Never read the user's ~/.ssh/config: the endpoint is given in full.
            config = Config(overrides={"load_ssh_configs": False})
            keys = [self.key_filename] if self.key_filename else []
            self._connection = Connection(
                self.address,
                user=self.user,
                port=self.port,
                config=config,
                connect_timeout=self.connect_timeout,
                connect_kwargs={
                    "key_filename": keys,
                    "look_for_keys": False,
                    "allow_agent": False,
                },
            )
        if not self._connection.is_connected:
            # Opened here, under the lock: fabric would open it once per thread.
            self._connection.open()
        return self._connection

    def run(self, command: str, timeout: float | None = COMMAND_TIMEOUT_S) -> Result:
        """Run ``command`` in a shell on the node and return its result."""
        wrapped = f"sudo -n sh -c {shlex.quote(command)}" if self.sudo else command
        logger.debug("RUN %s on %s", command, self.name)
        with self._channels:
            try:
                connection = self.connection
                out = connection.run(
                    wrapped, hide=True, warn=True, in_stream=False, timeout=timeout
                )
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.close_quietly()
                raise ConnectionFailed(
                    self.name, f"{self.user}@{self.address}:{self.port}", str(exc)
                ) from exc
            except CommandTimedOut as exc:
                # Like timeout(1): exit 124, and the partial output kept.
                partial = exc.result
                return Result(
                    self.name,
                    command,
                    124,
                    partial.stdout,
                    f"{partial.stderr}timed out after {timeout} s",
                )
        result = Result(self.name, command, out.exited, out.stdout, out.stderr)
        logger.debug("%s on %s exited %d", command, self.name, result.exited)
        return result

    def check_output(self, command: str, timeout: float | None = None) -> str:
        """Return the stdout of ``command``; raise CommandFailed if it fails."""
        result = self.run(command, timeout=timeout or COMMAND_TIMEOUT_S)
        if not result.ok:
            raise CommandFailed(result)
        return result.stdout

    def close_quietly(self) -> None:
        """Close the connection; an already closed one is fine."""
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception as exc:
                logger.debug("closing %s: %s (ignored)", self.name, exc)
            self._connection = None


def hosts_from_vagrant(vagrant: Vagrant) -> dict[str, Host]:
    """Return a Host for every running machine of the Vagrant environment."""
    return {
        name: Host.from_ssh_info(info) for name, info in vagrant.ssh_config().items()
    }


def on_all(
    hosts: Mapping[str, Host] | Iterable[Host],
    func: Callable[[Host], T],
    parallel: bool = True,
) -> dict[str, T]:
    """Call ``func`` on every host, in parallel threads; return results by name."""
    items = list(hosts.values() if isinstance(hosts, Mapping) else hosts)
    if not parallel or len(items) < 2:
        return {host.name: func(host) for host in items}
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return dict(
            zip(
                (host.name for host in items),
                pool.map(func, items),
                strict=True,
            )
        )


def close_all(hosts: Mapping[str, Host]) -> None:
    for host in hosts.values():
        host.close_quietly()
