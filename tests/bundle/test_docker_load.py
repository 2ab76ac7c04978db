"""`docker load` takes every image archive and names it as the manifest says."""

from __future__ import annotations

import json
from pathlib import Path

from bundle_daemons import Docker


def test_docker_loads_every_image(bundle: Path, dockerd: Docker) -> None:
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    for name, ref in images.items():
        done = dockerd.docker("load", "--input", str(bundle / "images" / f"{name}.tar"))
        assert done.returncode == 0, done.stderr
        assert f"Loaded image: {ref}" in done.stdout
    listed = dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert set(images.values()) <= set(listed.stdout.split())


def test_docker_runs_the_pause_image(bundle: Path, dockerd: Docker) -> None:
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    dockerd.docker("load", "--input", str(bundle / "images" / "pause.tar"))
    done = dockerd.docker("run", "--rm", "--network", "none", images["pause"], "-v")
    assert done.returncode == 0, done.stderr
    assert "pause" in done.stdout
