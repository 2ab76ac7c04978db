"""`minicluster bundle build`: make the offline bundle from package registries."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from harness.bundle.build import Build, Pins, normalise_version
from harness.cache import cache_root

logger = logging.getLogger(__name__)


def configured_versions(root: Path | None = None) -> dict[str, str]:
    """Return the Kubernetes and Flannel versions of cluster.yaml (and its local file).

    The settings need not validate: a bundle.path that points at the bundle about to
    be built is refused until it exists, and the versions are read all the same.
    """
    from harness import settings

    root = root or settings.ROOT
    try:
        loaded = settings.load(root)
        values = {
            "kubernetes": loaded.kubernetes_version,
            "flannel": loaded.raw.get("flannel", {}).get("version"),
        }
    except settings.SettingsError as exc:
        logger.info(
            "settings do not validate yet, reading the versions as written: %s", exc
        )
        data: dict[str, Any] = {}
        for path in settings.settings_paths(root, os.environ):
            if path.is_file():
                data = settings.merge(
                    data, settings.read_yaml(path, root).get("data") or {}
                )
        values = {
            "kubernetes": data.get("kubernetes", {}).get("version"),
            "flannel": data.get("flannel", {}).get("version"),
        }
    return {key: str(value) for key, value in values.items() if value}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `bundle build` on the `minicluster` command line."""
    bundle: argparse.ArgumentParser = subparsers.add_parser(
        "bundle", help="make the offline bundle", description=__doc__
    )
    actions = bundle.add_subparsers(dest="bundle_command", required=True)
    build = actions.add_parser(
        "build",
        help="build (or reuse) the bundle of one Kubernetes version",
        description="Build the offline bundle from the Go module proxy and Debian's "
        "packages, reusing every finished step of an earlier run.",
    )
    build.add_argument(
        "--kubernetes-version",
        metavar="V",
        help="e.g. 1.36.3 (default: kubernetes.version of cluster.yaml)",
    )
    build.add_argument(
        "--cache",
        type=Path,
        help="cache directory (default: $MINICLUSTER_CACHE or ~/.cache/minicluster)",
    )
    build.set_defaults(func=build_command)
    return bundle


def build_command(args: argparse.Namespace) -> int:
    """Build the bundle and log where it is."""
    configured = configured_versions(getattr(args, "root", None))
    defaults = Pins()
    pins = Pins(
        kubernetes=normalise_version(
            args.kubernetes_version or configured.get("kubernetes", defaults.kubernetes)
        ),
        flannel=configured.get("flannel", defaults.flannel),
    )
    build = Build(pins, args.cache or cache_root())
    started = time.monotonic()
    build.run()
    logger.info(
        "bundle %s ready in %s (%.0f s)",
        pins.kubernetes,
        build.bundle,
        time.monotonic() - started,
    )
    return 0
