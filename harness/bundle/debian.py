"""Image file trees from Debian's packages, fetched with apt and unpacked in Python.

Nothing is installed on the host: ``apt-get download`` fetches the .deb files the
host's apt sources offer, and their data tars become layer entries. Maintainer
scripts never run, so the few things they would do (the iptables alternatives,
users) are written by the image definitions instead.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

from harness.bundle.archive import Entry, dir_entry, file_entry, symlink_entry
from harness.bundle.steps import BuildError, run

logger = logging.getLogger(__name__)

APT_HINT = (
    "the bundle's Debian layers come from the host's apt sources (Debian bookworm); "
    "run `apt-get update` and check `apt-cache policy nginx iptables`"
)

# Needed only by maintainer scripts, init scripts or dpkg itself, which never run in
# an image: leaving them out keeps the images small and changes nothing at run time.
NOT_IN_IMAGES = frozenset(
    {
        "adduser",
        "awk",  # base-files' scripts
        "cdebconf",
        "debconf",
        "debconf-2.0",
        "debianutils",  # add-shell and run-parts for maintainer scripts
        "dpkg",
        "init-system-helpers",
        "install-info",
        "iproute2",  # nginx's init script uses it; the daemon does not
        "lsb-base",
        "perl-base",
        "sysvinit-utils",
        "ucf",
    }
)

APT_DEPENDS = (
    "apt-cache",
    "depends",
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
)

# `  Depends: libc6`, ` |Depends: debconf`, `  PreDepends: <awk>`, `    mawk`
DEPENDS_LINE = re.compile(r"^ (?P<alt>[ |])(?:Pre)?Depends: (?P<name><?[^ >]+>?)")
PROVIDER_LINE = re.compile(r"^    (?P<name>\S+)$")


def dependencies(output: str) -> list[list[str]]:
    """Return, per dependency in ``apt-cache depends`` output, its alternatives.

    Virtual packages keep their angle brackets and are followed by their providers::

        nginx-common
         |Depends: debconf
          Depends: <debconf-2.0>
            cdebconf
            debconf
    """
    groups: list[list[str]] = []
    alternative = False  # the previous dependency ended in "|"
    virtual = False
    for line in output.splitlines():
        dep = DEPENDS_LINE.match(line)
        provider = PROVIDER_LINE.match(line)
        if dep:
            name = dep.group("name")
            if alternative:
                groups[-1].append(name)
            else:
                groups.append([name])
            alternative = dep.group("alt") == "|"
            virtual = name.startswith("<")
        elif provider and virtual:
            groups[-1].append(provider.group("name"))
    return groups


def resolve(roots: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Return ``roots`` and everything they depend on, less packages not needed."""
    skip = NOT_IN_IMAGES | set(exclude)
    chosen: set[str] = set()
    wanted = [name for name in roots if name not in skip]
    while wanted:
        chosen.update(wanted)
        out = run(
            "resolving Debian dependencies",
            [*APT_DEPENDS, *sorted(set(wanted))],
            hint=APT_HINT,
        )
        wanted = []
        for alternatives in dependencies(out):
            names = [name.strip("<>") for name in alternatives]
            if any(name in chosen or name in skip for name in names):
                continue
            real = [name for name in alternatives if not name.startswith("<")]
            if not real:
                raise BuildError(
                    "resolving Debian dependencies",
                    f"nothing provides {' | '.join(alternatives)}",
                    APT_HINT,
                )
            wanted.append(real[0])
        wanted = [name for name in dict.fromkeys(wanted) if name not in chosen]
    return sorted(chosen)


def download(packages: Iterable[str], directory: Path) -> None:
    """Fetch the candidate .deb of each package into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted(set(packages))
    run(
        "downloading Debian packages",
        ["apt-get", "download", "-q", *names],
        cwd=directory,
        hint=APT_HINT,
    )
    found = {deb_field(deb, "Package") for deb in directory.glob("*.deb")}
    missing = set(names) - found
    if missing:
        raise BuildError(
            "downloading Debian packages",
            f"apt fetched no .deb for {', '.join(sorted(missing))}",
            APT_HINT,
        )


def deb_field(deb: Path, name: str) -> str:
    return run(f"reading {deb.name}", ["dpkg-deb", "-f", deb, name]).strip()


def versions(directory: Path) -> dict[str, str]:
    """Return ``{package: version}`` of the .deb files in ``directory``."""
    return {
        deb_field(deb, "Package"): deb_field(deb, "Version")
        for deb in sorted(directory.glob("*.deb"))
    }


def deb_entries(deb: Path) -> list[Entry]:
    """Return the files of ``deb``'s data tar as layer entries (hard links copied)."""
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False
    )
    if data.returncode != 0:
        raise BuildError(f"unpacking {deb.name}", data.stderr.decode().strip())
    entries: list[Entry] = []
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data.stdout), mode="r:") as tar:
        for member in tar:
            path = member.name.removeprefix("./").strip("/")
            if not path:
                continue
            mode = member.mode & 0o7777
            if member.isdir():
                entries.append(dir_entry(path, mode))
            elif member.issym():
                entries.append(symlink_entry(path, member.linkname))
            elif member.islnk():
                target = member.linkname.removeprefix("./")
                entries.append(file_entry(path, contents[target], mode))
            elif member.isfile():
                extracted = tar.extractfile(member)
                raw = extracted.read() if extracted else b""
                contents[path] = raw
                entries.append(file_entry(path, raw, mode))
    return entries


# Manual pages and translations are of no use in an image; copyright files stay.
LEFT_OUT = (
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "usr/share/lintian/",
)


def tree_entries(directory: Path) -> list[Entry]:
    """Return the entries of every .deb in ``directory``, in package-name order."""
    debs = sorted(directory.glob("*.deb"), key=lambda deb: deb_field(deb, "Package"))
    if not debs:
        raise BuildError("Debian layer", f"no .deb files in {directory}", APT_HINT)
    return [
        entry
        for deb in debs
        for entry in deb_entries(deb)
        if not (entry.path + "/").startswith(LEFT_OUT)
    ]
