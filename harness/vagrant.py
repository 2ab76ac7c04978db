"""The Vagrant lifecycle through python-vagrant: up, status, ssh-config, halt, destroy.

python-vagrant 1.0.0 raises ``CalledProcessError`` on failure and drops stderr
unless given a place to write it; every call here captures stderr to a file and
raises :class:`VagrantError` with it. Its ``env`` replaces the whole environment,
so the caller's environment is always passed on with the harness's additions.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import vagrant

from harness.errors import NoCluster, VagrantError

logger = logging.getLogger(__name__)

RUNNING = "running"  # vagrant up
NOT_CREATED = "not_created"  # vagrant destroy
POWEROFF = "poweroff"  # vagrant halt (virtualbox; libvirt's shutoff is mapped here)
STOPPED = "stopped"  # vagrant halt (docker)

# Quiet and deterministic: no update checks, no colour codes in parsed output.
BASE_ENV = {
    "VAGRANT_CHECKPOINT_DISABLE": "1",
    "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
    "VAGRANT_NO_COLOR": "1",
}


@dataclass(frozen=True)
class MachineStatus:
    """One machine of ``vagrant status``: its name, state and provider."""

    name: str
    state: str
    provider: str

    @property
    def is_running(self) -> bool:
        return self.state == RUNNING

    @property
    def is_created(self) -> bool:
        return self.state != NOT_CREATED


@dataclass(frozen=True)
class SSHInfo:
    """Where to reach one machine over SSH, as ``vagrant ssh-config`` says."""

    name: str
    host: str
    port: int
    user: str
    key_filename: str


def parse_ssh_config(text: str) -> dict[str, SSHInfo]:
    """Return the SSH endpoint of every ``Host`` block of ``vagrant ssh-config``.

    Input looks like (one block per running machine)::

        Host worker-1
          HostName 127.0.0.1
          User vagrant
          Port 2200
          IdentityFile /repo/.vagrant/machines/worker-1/docker/private_key
    """
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        key, value = words[0].lower(), (words[1] if len(words) > 1 else "")
        value = value.strip().strip('"')
        if key == "host":
            current = blocks.setdefault(value, {})
        elif current is not None:
            # The first IdentityFile is the one Vagrant put in for this machine.
            current.setdefault(key, value)
    infos = {}
    for name, conf in blocks.items():
        missing = {"hostname", "port", "user"} - conf.keys()
        if missing:
            raise VagrantError(
                ["ssh-config", name],
                0,
                text,
                f"no {', '.join(sorted(missing))} for {name!r} in its output",
            )
        infos[name] = SSHInfo(
            name,
            conf["hostname"],
            int(conf["port"]),
            conf["user"],
            conf.get("identityfile", ""),
        )
    return infos


def machine_readable_error(output: str) -> str:
    """Return the message of an ``error-exit`` line of --machine-readable output.

    Input looks like (one line)::

        1796301785,,error-exit,Vagrant::Errors::MachineNotFound,The machine with
        the name 'nosuch' was not found configured for\\nthis Vagrant environment.
    """
    for line in output.splitlines():
        fields = line.split(",", 4)
        if len(fields) == 5 and fields[2] == "error-exit":
            text = fields[4].replace("%!(VAGRANT_COMMA)", ",").replace("\\n", " ")
            return f"{text} ({fields[3]})"
    return ""


# Vagrant's ui lines: "==> worker-1: Running provisioner: join.sh (shell)..."
_PHASE = re.compile(r"^==> (?P<node>[\w.-]+): (?P<message>.*)$")
_OUTPUT = re.compile(r"^    (?P<node>[\w.-]+): (?P<message>.*)$")
_PROVISIONER = re.compile(r"Running provisioner: (?P<name>\S+)")


@dataclass(frozen=True)
class Progress:
    """What ``vagrant up`` said last: which node, which phase, which provisioner."""

    node: str
    phase: str
    provisioner: str = ""
    output: bool = False  # a line the provisioner printed, not a Vagrant step


def parse_progress(
    line: str, provisioners: Mapping[str, str] | None = None
) -> Progress | None:
    """Return the node and phase a line of ``vagrant up`` output is about, if any."""
    line = line.rstrip("\n")
    match = _PHASE.match(line)
    if match:
        node, message = match["node"], match["message"].strip()
        prov = _PROVISIONER.search(message)
        if prov:
            name = prov["name"]
            return Progress(node, f"provisioning {name}", name)
        return Progress(node, message.rstrip(".").rstrip())
    match = _OUTPUT.match(line)
    if match:
        node = match["node"]
        return Progress(
            node,
            match["message"],
            (provisioners or {}).get(node, ""),
            output=True,
        )
    return None


class Vagrant:
    """The project's Vagrant environment at ``root``."""

    def __init__(
        self,
        root: Path,
        provider: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.provider = provider
        base = os.environ if env is None else env
        self.env = {**base, **BASE_ENV}
        if provider:
            self.env["VAGRANT_DEFAULT_PROVIDER"] = provider

    def _client(self, err: Callable[[], Any]) -> vagrant.Vagrant:
        return vagrant.Vagrant(
            str(self.root), env=self.env, err_cm=err, quiet_stdout=False
        )

    @contextmanager
    def _call(self, *args: str) -> Iterator[vagrant.Vagrant]:
        """Yield a python-vagrant client; turn its failures into VagrantError."""
        with tempfile.TemporaryFile("w+b") as err_file:

            @contextmanager
            def err_cm() -> Iterator[IO[bytes]]:
                yield err_file

            logger.debug("RUN vagrant %s in %s", " ".join(args), self.root)
            try:
                yield self._client(err_cm)
            except subprocess.CalledProcessError as exc:
                err_file.seek(0)
                stderr = err_file.read().decode(errors="replace")
                stdout = exc.output.decode(errors="replace") if exc.output else ""
                output = machine_readable_error(stdout) or stdout + stderr
                raise VagrantError(args, exc.returncode, output) from exc
            except RuntimeError as exc:
                # python-vagrant's way of saying the executable is missing.
                raise VagrantError(
                    args, 127, str(exc), "install Vagrant (`apt-get install vagrant`)"
                ) from exc

    def status(self) -> list[MachineStatus]:
        """Return the state of every machine of the Vagrantfile."""
        with self._call("status", "--machine-readable") as v:
            statuses = v.status()
        return [MachineStatus(s.name, s.state, s.provider or "") for s in statuses]

    def ssh_config(self) -> dict[str, SSHInfo]:
        """Return the SSH endpoint of every running machine."""
        # One call when every machine runs: each vagrant call forks Ruby, which
        # takes seconds on a loaded machine.
        try:
            with self._call("ssh-config") as v:
                return parse_ssh_config(v.ssh_config())
        except VagrantError as exc:
            logger.debug("vagrant ssh-config of all machines: %s", exc)
        running = [s.name for s in self.status() if s.is_running]
        if not running:
            raise NoCluster(f"no machine is running in {self.root}")
        with self._call("ssh-config", *running) as v:
            text = "\n".join(v.ssh_config(vm_name=name) for name in running)
        return parse_ssh_config(text)

    def up(
        self, provision_with: list[str] | None = None, vm_name: str | None = None
    ) -> Iterator[str]:
        """Run ``vagrant up`` and yield its output line by line."""
        with self._call("up") as v:
            yield from v.up(
                vm_name=vm_name,
                provider=self.provider,
                provision_with=provision_with,
                stream_output=True,
            )

    def halt(self) -> None:
        with self._call("halt") as v:
            v.halt()

    def destroy(self) -> None:
        """Destroy every machine; already destroyed is fine."""
        with self._call("destroy", "--force") as v:
            v.destroy()

    def version(self) -> str:
        with self._call("--version") as v:
            version: str = v.version()
            return version
