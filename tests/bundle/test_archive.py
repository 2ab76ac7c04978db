"""Layer and docker-archive tars: sorted, owned by root, dated 0, byte-identical."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from harness.bundle import archive
from harness.bundle.archive import Layer, Tree


def sample_tree() -> Tree:
    tree = Tree()
    tree.extend(
        [
            archive.file_entry("usr/bin/tool", b"#!/bin/sh\n", 0o755),
            archive.symlink_entry("bin/sh", "dash"),
            archive.file_entry("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            archive.dir_entry("tmp", 0o1777),
        ]
    )
    return tree


def test_layer_is_sorted_with_parents_and_fixed_metadata(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar"
    archive.write_layer(sample_tree(), path)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"usr", "usr/bin", "bin", "etc"} <= set(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert next(m for m in members if m.name == "tmp").mode == 0o1777


def test_same_tree_gives_same_digest(tmp_path: Path) -> None:
    first = archive.write_layer(sample_tree(), tmp_path / "a.tar")
    second = archive.write_layer(sample_tree(), tmp_path / "b.tar")
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_image_archive_names_config_and_layers(tmp_path: Path) -> None:
    layer_path = tmp_path / "layer.tar"
    digest = archive.write_layer(sample_tree(), layer_path)
    layer = Layer(layer_path, digest, "test layer")
    image = tmp_path / "image.tar"
    archive.write_image(image, "localhost/test/tool:1", [layer], {"Cmd": ["tool"]})
    with tarfile.open(image) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        names = tar.getnames()
    assert manifest[0]["RepoTags"] == ["localhost/test/tool:1"]
    assert manifest[0]["Layers"] == [f"{digest}/layer.tar"]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{digest}"]
    assert names == sorted(names)
