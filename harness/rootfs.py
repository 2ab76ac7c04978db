"""Debian root file systems for the node image and the box.

Both are made the same way: debootstrap installs Debian's packages into a
directory, keeping the downloads in the cache, and Vagrant's well-known key lets
Vagrant log in the first time. What each does with the tree differs and lives in
``harness.nodeimage`` and ``harness.vmimage``.
"""

from __future__ import annotations

import glob
import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from harness.errors import HarnessError

logger = logging.getLogger(__name__)

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Vagrant's well-known public key, which Vagrant swaps for a per-machine key on
# first boot. Debian's vagrant package and HashiCorp's installer keep it here.
VAGRANT_KEY_GLOBS = (
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
)


class BuildStepError(HarnessError):
    """A step of building a root file system failed."""


def find_vagrant_key() -> Path:
    """Return the path of Vagrant's insecure public key."""
    for pattern in VAGRANT_KEY_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    raise BuildStepError(
        f"Vagrant's public key not found in {' or '.join(VAGRANT_KEY_GLOBS)}; "
        "install vagrant (`apt-get install vagrant`) or pass --vagrant-key"
    )


def run_step(
    args: Sequence[str],
    what: str,
    *,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    input: bytes | None = None,
) -> str:
    """Run ``args``; return its stdout, or raise BuildStepError with its output."""
    logger.debug("RUN %s", " ".join(args))
    try:
        done = subprocess.run(
            args, check=True, capture_output=True, stdin=stdin, input=input, env=env
        )
    except FileNotFoundError as exc:
        raise BuildStepError(f"{what}: {args[0]} not found; install it") from exc
    except subprocess.CalledProcessError as exc:
        output = (exc.stdout or b"") + (exc.stderr or b"")
        raise BuildStepError(
            f"{what}: {' '.join(args[:4])} ... exited {exc.returncode}\n"
            f"{output.decode(errors='replace')[-3000:]}"
        ) from exc
    return done.stdout.decode(errors="replace")


def debootstrap(root: Path, packages: Sequence[str], mirror: str, debs: Path) -> None:
    """Install the base system and ``packages`` into ``root``, caching in ``debs``."""
    debs.mkdir(parents=True, exist_ok=True)
    # dpkg syncs every file it unpacks; a tree that is rebuilt from scratch
    # after a crash needs none of that, and it halves the time of this step.
    unsafe = root / "etc/dpkg/dpkg.cfg.d/minicluster-unsafe-io"
    unsafe.parent.mkdir(parents=True, exist_ok=True)
    unsafe.write_text("force-unsafe-io\n")
    run_step(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--cache-dir={debs}",
            SUITE,
            str(root),
            mirror,
        ],
        "debootstrap",
    )
    unsafe.unlink()
