"""Benchmark: verify on the integration lab's hosts, serial against parallel.

Run as root: ``python benchmarks/verify.py [--rounds N] [--out FILE]``. It makes
the three SSH hosts of tests/integration (removed at the end), runs the
host-side checks (everything but the Kubernetes API) with fresh connections
each round, serially and in parallel, and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.checks import Context, load_all, run_checks, select  # noqa: E402
from harness.remote import close_all  # noqa: E402
from tests.integration.lab import Lab, missing_prerequisites  # noqa: E402

HOST_SIDE = "hosts or flannel_iface or node_port"
GOAL_SPEEDUP = 2.5
GOAL_PARALLEL_S = 10.0


def one_round(lab: Lab, settings: object, parallel: bool) -> tuple[float, int]:
    """Return the wall time of one verify with new connections, and its rows."""
    hosts = lab.runners()
    ctx = Context(settings, hosts, probe_timeout_s=3)
    checks = select(HOST_SIDE, load_all().values())
    start = time.monotonic()
    rows = run_checks(ctx, checks, parallel=parallel)
    elapsed = time.monotonic() - start
    close_all(hosts)
    failed = [r for r in rows if r.failed]
    if failed:
        raise SystemExit(f"the lab is not healthy: {failed}")
    return elapsed, len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "verify.json"
    )
    args = parser.parse_args()
    problems = missing_prerequisites()
    if problems:
        print("cannot run the lab here: " + "; ".join(problems), file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="minicluster-bench-") as tmp:
        lab = Lab(Path(tmp))
        lab.start()
        try:
            settings = lab.settings()
            one_round(lab, settings, parallel=True)  # warm caches, not counted
            serial, parallel = [], []
            for _ in range(args.rounds):
                s, rows = one_round(lab, settings, parallel=False)
                p, _ = one_round(lab, settings, parallel=True)
                serial.append(s)
                parallel.append(p)
        finally:
            lab.stop()

    serial_s, parallel_s = statistics.median(serial), statistics.median(parallel)
    figures = {
        "what": "verify of the host-side checks on 3 SSH hosts, fresh connections",
        "checks_rows": rows,
        "rounds": args.rounds,
        "serial_s": [round(x, 3) for x in serial],
        "parallel_s": [round(x, 3) for x in parallel],
        "serial_median_s": round(serial_s, 3),
        "parallel_median_s": round(parallel_s, 3),
        "speedup": round(serial_s / parallel_s, 2),
        "goal_speedup": GOAL_SPEEDUP,
        "goal_parallel_s": GOAL_PARALLEL_S,
        "cpus": os.cpu_count(),
        "loadavg_1m_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
