"""Two builds of the same version give the same SHA256SUMS.

The second build starts from a copy of the first one's cache without its image
layers, image archives, bundle directory, pause binary and flannel CNI plugin, so
it writes every layer and archive again, recompiles pause with gcc, relinks the
flannel plugin with Go, and writes the manifest again. The Kubernetes, etcd,
CoreDNS and Flannel binaries and the downloaded .deb files are reused: rebuilding
them takes most of an hour, and they are built with -trimpath and fixed version
flags, which Go documents as reproducible.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.bundle.build import Build


def test_rebuild_gives_identical_sha256sums(
    bundle_build: Build, tmp_path: Path
) -> None:
    first = bundle_build.bundle / "SHA256SUMS"
    cache = tmp_path / "cache"
    work = cache / "build" / bundle_build.version
    work.parent.mkdir(parents=True)
    # Hard links: the copy costs no space, and the build replaces files, never edits.
    subprocess.run(["cp", "-al", str(bundle_build.work), str(work)], check=True)
    rebuilt = [
        bundle_build.made("images"),
        bundle_build.made("layers"),
        bundle_build.made("pause"),
        bundle_build.out("bin", f"flannel-cni-{bundle_build.pins.flannel_cni}"),
    ]
    for path in rebuilt:
        target = work / path.relative_to(bundle_build.work)
        subprocess.run(["rm", "-rf", str(target)], check=True)

    again = Build(bundle_build.pins, cache)
    spent = again.run()

    assert (again.bundle / "SHA256SUMS").read_text() == first.read_text()
    assert any(title.startswith("compiling pause") for title in spent)
    assert sum(title.startswith("writing image") for title in spent) == len(
        again.image_names()
    )
