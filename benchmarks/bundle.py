"""Time `minicluster bundle build` cold and warm, and weigh the bundle.

Cold means nothing cached: an empty bundle cache, an empty Go build cache and an
empty Go module cache, so every module is downloaded from the proxy and every
package compiled, as on a fresh CI machine. Warm is the same build run again on
the cache the cold one left. Each build's per-step times come from its log.

    python benchmarks/bundle.py                 # warm only, on the usual cache
    python benchmarks/bundle.py --cold          # cold, then warm (15-30 min)
    python benchmarks/bundle.py --output results/bundle.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.cache import cache_root  # noqa: E402

STEP = re.compile(r"step (\d+)/\d+: (.*)$")
DONE = re.compile(r"step (\d+)/\d+: done in ([\d.]+) s")


def build(cache: Path, env: dict[str, str], version: str | None) -> dict[str, object]:
    """Run one build; return its wall time and the seconds of each step it ran."""
    argv = [sys.executable, "-m", "harness.bundle", "build", "--cache", str(cache)]
    if version:
        argv += ["--kubernetes-version", version]
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bundle build failed (exit {done.returncode})")
    titles: dict[str, str] = {}
    steps: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if finished := DONE.search(line):
            steps[titles[finished.group(1)]] = float(finished.group(2))
        elif started_step := STEP.search(line):
            titles[started_step.group(1)] = started_step.group(2)
    return {"seconds": round(wall, 1), "steps": steps}


def size_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a cold build")
    parser.add_argument("--kubernetes-version", metavar="V")
    parser.add_argument(
        "--output", type=Path, default=REPO / "results" / "bundle-benchmark.json"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    result: dict[str, object] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="mc-bundle-bench-") as scratch:
        if args.cold:
            cache = Path(scratch) / "cache"
            env["GOCACHE"] = f"{scratch}/go-build"
            env["GOMODCACHE"] = f"{scratch}/go-mod"
            print(f"cold build in {cache} (GOCACHE and GOMODCACHE empty)")
            result["cold"] = build(cache, env, args.kubernetes_version)
        else:
            cache = cache_root(env)
        result["warm"] = build(cache, env, args.kubernetes_version)
        bundles = sorted((cache / "bundle").iterdir())
        result["bundle"] = {b.name: size_of(b) for b in bundles}
        if args.cold:
            # Module files are read-only; `go clean -modcache` knows how to remove them.
            subprocess.run(["go", "clean", "-modcache"], env=env, check=False)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
