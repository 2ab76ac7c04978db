"""Private containerd and dockerd instances for the bundle tests, and their clients.

Each daemon runs as root with its own root, state and socket under a temporary
directory, so the tests touch no containerd or Docker engine of the machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "k8s.io"


def need_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemons under test run as root")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: apt-get install docker.io)")


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen[bytes], name: str) -> None:
    """Stop a daemon we started; one that already exited is fine."""
    if process.poll() is not None:
        logger.info("%s had already exited (%s)", name, process.returncode)
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        logger.warning("%s ignored SIGTERM for 30 s; killing it", name)
        process.kill()
        process.wait()


@contextmanager
def running(
    argv: Sequence[str], directory: Path, ready: Callable[[], bool], timeout: float
) -> Iterator[None]:
    """Run the daemon ``argv`` with its state in ``directory`` until the block ends.

    The block starts once ``ready`` says yes; afterwards the daemon is stopped,
    what it mounted is unmounted and ``directory`` is removed.
    """
    name = Path(argv[0]).name
    log = (directory / f"{name}.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            f"the private {name}", lambda: process.poll() is None and ready(), timeout
        )
        yield
    finally:
        stop(process, name)
        log.close()
        unmount_below(directory)
        shutil.rmtree(directory, ignore_errors=True)


def unmount_below(directory: Path) -> None:
    """Unmount whatever a daemon left mounted under ``directory`` (deepest first)."""
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(directory))
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


@dataclass
class Containerd:
    """A private containerd and the ctr command line that talks to it."""

    address: Path

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", str(self.address), "-n", NAMESPACE, *args]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False
        )

    def run(self, image: str, *command: str, env: Sequence[str] = ()) -> str:
        """Run ``command`` in ``image`` to its end; return stdout and stderr."""
        flags = [arg for e in env for arg in ("--env", e)]
        for attempt in range(1, 4):
            name = f"t{time.monotonic_ns()}"
            done = self.ctr("run", "--rm", *flags, image, name, *command, timeout=120)
            assert done.returncode == 0, (
                f"{command} in {image} exited {done.returncode}: "
                f"{done.stdout}{done.stderr}"
            )
            if done.stdout or done.stderr:
                return done.stdout + done.stderr
            # NOTE: ctr run of containerd 1.6 now and then loses all the output of
            # a process that exits at once; the exit code still arrives.
            logger.warning("try %d: %s in %s printed nothing", attempt, command, image)
        return ""


CONTAINERD_CONFIG = """\
version = 2
root = "{dir}/root"
state = "{dir}/state"
# This instance is for `ctr`; the CRI plugin would also want CNI and kubelet's paths.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
"""


@dataclass
class Docker:
    """A private dockerd and the docker command line that talks to it."""

    host: str

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "--host", self.host, *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
