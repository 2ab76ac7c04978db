"""Time the docker provider's cluster, phase by phase.

    python benchmarks/e2e.py [--output FILE] [--keep-cluster]

Runs, once each: the Docker daemon (started if none runs), ``minicluster image
build``, ``minicluster bundle build``, ``vagrant up --provider=docker``,
``minicluster verify`` until green, and ``vagrant destroy -f``. The run is
labelled "warm" when the node image and the bundle existed before it, "cold"
otherwise, and appended to FILE (default ``benchmarks/results/e2e.json``), so
cold and warm runs sit side by side. The goal of a warm run: up plus verify
within 5 minutes. ``tox -e e2e`` writes the same phase times, with the fault
phases, to ``results/e2e/phases.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import settings  # noqa: E402
from harness.cache import cache_root  # noqa: E402
from tests.e2e import dockerhost  # noqa: E402
from tests.e2e.driver import Run, run_environment  # noqa: E402
from tests.phases import Phases  # noqa: E402

GOAL_S = 5 * 60


def image_exists(tag: str) -> bool:
    done = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, check=False
    )
    return done.returncode == 0


def run_once(results: Path, keep: bool) -> dict[str, Any]:
    """Run the phases once; return the benchmark's record."""
    loaded = settings.load(ROOT, provider="docker")
    bundle_root = cache_root() / "bundle"
    manifest = bundle_root / f"v{loaded.kubernetes_version}" / "manifest.json"
    phases = Phases(results / "phases.json")
    with phases.phase("docker-daemon"):
        daemon = dockerhost.start_daemon(results / "dockerd.log")
        dockerhost.isolate(daemon)
    warm = image_exists(loaded.providers["docker"]["image"]) and manifest.is_file()
    env = run_environment(
        os.environ, privileged=dockerhost.can_run_privileged(), bundle=None
    )
    run = Run(ROOT, results, env)
    try:
        with phases.phase("node-image"):
            run.minicluster("image", "build", timeout=30 * 60)
        with phases.phase("bundle"):
            run.minicluster("bundle", "build", timeout=60 * 60)
        run.env["MINICLUSTER_BUNDLE_PATH"] = str(bundle_root)
        with phases.phase("up"):
            run.vagrant("up", "--provider=docker", timeout=45 * 60)
        with phases.phase("verify"):
            run.wait_green("benchmark", timeout_s=600)
    finally:
        if not keep:
            with phases.phase("destroy"):
                run.vagrant("destroy", "--force")
        dockerhost.stop_daemon(daemon)
    up_verify = phases.seconds("up") + phases.seconds("verify")
    return {
        "label": "warm" if warm else "cold",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "nodes": len(loaded.nodes),
        "phases": phases.rows,
        "up_plus_verify_s": round(up_verify, 1),
        "goal_s": GOAL_S,
        "within_goal": up_verify <= GOAL_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks/results/e2e.json"
    )
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    record = run_once(args.output.parent / "e2e-run", args.keep_cluster)
    runs = []
    if args.output.is_file():
        runs = json.loads(args.output.read_text(encoding="utf-8"))
    runs.append(record)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    for row in record["phases"]:
        status = "ok" if row["ok"] else "FAILED"
        print(f"{row['phase']:<14} {row['seconds']:>7.1f} s  {status}")
    print(
        f"{record['label']} run: up + verify {record['up_plus_verify_s']} s "
        f"(goal {GOAL_S} s); written to {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
