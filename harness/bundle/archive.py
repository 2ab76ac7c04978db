"""Image layers and docker-archive tars, written byte for byte the same every time.

A layer is a plain tar of a file tree. An image archive is the format of
``docker save``: ``manifest.json`` names the config and the layer tars, and both
``docker load`` and ``ctr images import`` read it. Every entry is sorted by path,
owned by 0:0, dated 0, so the same inputs give the same checksums.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"

EPOCH = "1970-01-01T00:00:00Z"  # the "created" time of every image and layer


@dataclass(frozen=True)
class Entry:
    """One file, directory or symlink of a layer; ``path`` has no leading slash."""

    path: str
    kind: str = FILE
    mode: int = 0o644
    data: bytes = b""
    target: str = ""  # the symlink's target
    source: Path | None = None  # read the file's bytes from here instead of data

    def size(self) -> int:
        if self.kind != FILE:
            return 0
        return self.source.stat().st_size if self.source else len(self.data)


def file_entry(path: str, data: bytes | str, mode: int = 0o644) -> Entry:
    """Return a regular file entry holding ``data``."""
    raw = data.encode() if isinstance(data, str) else data
    return Entry(path.lstrip("/"), FILE, mode, raw)


def disk_entry(path: str, source: Path, mode: int = 0o755) -> Entry:
    """Return a regular file entry whose bytes are read from ``source``."""
    return Entry(path.lstrip("/"), FILE, mode, source=source)


def dir_entry(path: str, mode: int = 0o755) -> Entry:
    return Entry(path.lstrip("/").rstrip("/"), DIR, mode)


def symlink_entry(path: str, target: str) -> Entry:
    return Entry(path.lstrip("/"), SYMLINK, 0o777, target=target)


@dataclass
class Tree:
    """A file tree being assembled; later entries replace earlier ones."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        # Parents first, so that every path in the tar has its directory.
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in self.entries:
                self.entries[parent] = dir_entry(parent)
        old = self.entries.get(entry.path)
        if old is not None and old.kind == DIR and entry.kind == DIR:
            return  # the first package to ship a directory sets its mode
        self.entries[entry.path] = entry

    def extend(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.add(entry)


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == DIR else ""))
    info.mode = entry.mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == DIR:
        info.type = tarfile.DIRTYPE
    elif entry.kind == SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
    else:
        info.size = entry.size()
    return info


def write_layer(tree: Tree, path: Path) -> str:
    """Write ``tree`` as a layer tar at ``path``; return its sha256 (the diff ID)."""
    with (
        path.open("wb") as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name in sorted(tree.entries):
            entry = tree.entries[name]
            info = _tarinfo(entry)
            if entry.kind != FILE:
                tar.addfile(info)
            elif entry.source is not None:
                with entry.source.open("rb") as src:
                    tar.addfile(info, src)
            else:
                tar.addfile(info, io.BytesIO(entry.data))
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """Return ``value`` as compact JSON with sorted keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Layer:
    """A finished layer tar on disk, with its sha256 and what made it."""

    path: Path
    digest: str
    created_by: str


def image_config(layers: list[Layer], config: Mapping[str, Any]) -> bytes:
    """Return the image config JSON (the ``docker inspect`` Config plus rootfs)."""
    return canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": EPOCH,
            "config": dict(config),
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{layer.digest}" for layer in layers],
            },
            "history": [
                {"created": EPOCH, "created_by": layer.created_by} for layer in layers
            ],
        }
    )


def write_image(
    path: Path, reference: str, layers: list[Layer], config: Mapping[str, Any]
) -> None:
    """Write a docker-archive tar of one image named ``reference`` at ``path``."""
    config_json = image_config(layers, config)
    config_name = hashlib.sha256(config_json).hexdigest() + ".json"
    manifest = canonical_json(
        [
            {
                "Config": config_name,
                "RepoTags": [reference],
                "Layers": [f"{layer.digest}/layer.tar" for layer in layers],
            }
        ]
    )
    members: dict[str, Entry] = {
        "manifest.json": file_entry("manifest.json", manifest),
        config_name: file_entry(config_name, config_json),
    }
    for layer in layers:
        name = f"{layer.digest}/layer.tar"
        members[layer.digest] = dir_entry(layer.digest)
        members[name] = disk_entry(name, layer.path, 0o644)
    write_layer(Tree(members), path)


def atomic_path(path: Path) -> Path:
    """Return the temporary sibling of ``path`` that a step writes before renaming."""
    return path.with_name(f".{path.name}.partial.{os.getpid()}")
