"""`minicluster bundle build`: make the offline bundle from package registries."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from harness.bundle.build import Build, Pins, default_cache, normalise_version

logger = logging.getLogger(__name__)


def configured_versions() -> dict[str, str]:
    """Return the Kubernetes and Flannel versions of cluster.yaml, where readable."""
    try:
        from harness import settings  # type: ignore[attr-defined,unused-ignore]

        loaded: Any = settings.load()  # type: ignore[attr-defined,unused-ignore]
    except Exception as exc:  # no settings module yet, or invalid settings
        logger.debug("settings not used for the bundle's versions: %s", exc)
        return {}
    versions = {"kubernetes": str(loaded.kubernetes_version)}
    flannel = loaded.raw.get("flannel", {}).get("version")
    if flannel:
        versions["flannel"] = str(flannel)
    return versions


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
    configured = configured_versions()
    defaults = Pins()
    pins = Pins(
        kubernetes=normalise_version(
            args.kubernetes_version or configured.get("kubernetes", defaults.kubernetes)
        ),
        flannel=configured.get("flannel", defaults.flannel),
    )
    build = Build(pins, args.cache or default_cache())
    started = time.monotonic()
    build.run()
    logger.info(
        "bundle %s ready in %s (%.0f s)",
        pins.kubernetes,
        build.bundle,
        time.monotonic() - started,
    )
    return 0
