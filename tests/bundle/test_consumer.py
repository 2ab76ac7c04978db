"""provision/bundle.sh, run by real bash against the real bundle (or a damaged copy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bundle_daemons import REPO, Containerd

BUNDLE_SH = REPO / "provision" / "bundle.sh"


def bash(script: str, root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Source bundle.sh under lib.sh's shell options and run ``script``."""
    prelude = f"set -o errexit -o nounset -o pipefail\nsource {BUNDLE_SH}\n"
    return subprocess.run(
        ["bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        env={**os.environ, "BUNDLE_INSTALL_ROOT": str(root), **env},
        timeout=300,
        check=False,
    )


def mirror(bundle: Path, into: Path) -> Path:
    """Return a copy of ``bundle`` made of symlinks, so one file can be replaced."""
    copy = into / bundle.name
    for path in bundle.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(bundle)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return copy


def corrupt(copy: Path, relative: str) -> None:
    """Replace the symlink ``relative`` by a copy with one byte changed."""
    target = copy / relative
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.unlink()
    target.write_bytes(bytes(data))


def sha256(path: Path) -> str:
    return subprocess.run(
        ["sha256sum", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def test_verify_passes_on_the_built_bundle(bundle: Path, tmp_path: Path) -> None:
    done = bash(f"bundle_verify {bundle}", tmp_path)
    assert done.returncode == 0, done.stderr
    listed = len((bundle / "SHA256SUMS").read_text().splitlines())
    assert f"{listed} files match SHA256SUMS" in done.stdout


def test_corrupt_file_is_refused_and_nothing_installed(
    bundle: Path, tmp_path: Path
) -> None:
    copy = mirror(bundle, tmp_path / "bundle")
    corrupt(copy, "cni/bin/loopback")
    expected = next(
        line.split()[0]
        for line in (bundle / "SHA256SUMS").read_text().splitlines()
        if line.endswith("  cni/bin/loopback")
    )
    root = tmp_path / "root"
    done = bash(f"bundle_install_kubernetes {copy}; bundle_install_cni {copy}", root)
    assert done.returncode == 1
    assert "bundle file cni/bin/loopback is corrupt" in done.stderr
    assert expected in done.stderr
    assert sha256(copy / "cni/bin/loopback") in done.stderr
    assert not root.exists(), "something was installed from a corrupt bundle"


def test_missing_file_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = mirror(bundle, tmp_path / "bundle")
    (copy / "bin" / "kubelet").unlink()
    done = bash(f"bundle_verify {copy}", tmp_path / "root")
    assert done.returncode == 1
    assert "bundle file bin/kubelet is missing" in done.stderr


def test_install_places_binaries_units_and_plugins(
    bundle: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    script = f"bundle_install_kubernetes {bundle}\nbundle_install_cni {bundle}\n"
    done = bash(script, root)
    assert done.returncode == 0, done.stderr
    for command in ("kubeadm", "kubelet", "kubectl"):
        assert os.access(root / "usr/local/bin" / command, os.X_OK)
    assert (
        "/usr/local/bin/kubelet"
        in (root / "etc/systemd/system/kubelet.service.d/10-kubeadm.conf").read_text()
    )
    plugins = {path.name for path in (root / "opt/cni/bin").iterdir()}
    assert {"bridge", "host-local", "loopback", "portmap", "flannel"} <= plugins
    # A second run finds everything in place.
    again = bash(script, root)
    assert again.returncode == 0, again.stderr
    assert "installed " not in again.stdout


def test_installed_binaries_report_the_version(bundle: Path, tmp_path: Path) -> None:
    version = json.loads((bundle / "manifest.json").read_text())["kubernetes_version"]
    kubeadm = subprocess.run(
        [str(bundle / "bin/kubeadm"), "version", "-o", "short"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert kubeadm.stdout.strip() == version
    for command in ("kubelet --version", "kubectl version --client"):
        name, *args = command.split()
        out = subprocess.run(
            [str(bundle / "bin" / name), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert version in out


def test_image_ref_reads_the_manifest(bundle: Path, tmp_path: Path) -> None:
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    for name, ref in images.items():
        done = bash(f"bundle_image_ref {bundle} {name}", tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ref
    unknown = bash(f"bundle_image_ref {bundle} no-such-image", tmp_path)
    assert unknown.returncode == 1
    assert "no image called no-such-image" in unknown.stderr


def test_image_list_matches_kubeadm(bundle: Path) -> None:
    kubeadm = str(bundle / "bin/kubeadm")
    listed = subprocess.run(
        [kubeadm, "config", "images", "list", "--kubernetes-version", bundle.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    assert set(listed) <= set(images.values())


def test_import_pins_every_image(
    bundle: Path, containerd: Containerd, tmp_path: Path
) -> None:
    done = bash(
        f"bundle_import_images {bundle}",
        tmp_path,
        CONTAINERD_ADDRESS=str(containerd.address),
    )
    assert done.returncode == 0, done.stderr
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    listed = containerd.ctr("images", "ls").stdout.splitlines()[1:]
    pinned = {
        line.split()[0] for line in listed if "io.cri-containerd.pinned=pinned" in line
    }
    assert pinned >= set(images.values())


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck missing")
def test_bundle_sh_is_shellcheck_clean() -> None:
    done = subprocess.run(
        ["shellcheck", str(BUNDLE_SH)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
