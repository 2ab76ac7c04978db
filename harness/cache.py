"""Where MiniCluster keeps what it builds: bundles, node image and box packages."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Return ``${MINICLUSTER_CACHE:-~/.cache/minicluster}``."""
    return Path(environ.get("MINICLUSTER_CACHE") or Path.home() / ".cache/minicluster")
