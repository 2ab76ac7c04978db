"""Time the emulated storage VMs and measure the share against local disk.

    python benchmarks/storage.py [--output FILE] [--mib N]

Runs once, as root: the libvirt daemons (started if none answers), ``minicluster
box build``, ``vagrant up --provider=libvirt --provision-with nfs-server,nfs-mount``
(boot and provisioning timed apart), the storage checks, then on every node the
write and read throughput of N MiB on the share and on the VM's own disk, and
``vagrant destroy -f``. The run is labelled "warm" when the box was cached and
"cold" otherwise, and appended to FILE (default
``benchmarks/results/storage.json``). ``tox -e storage`` writes the same numbers,
with the fault and recovery phases, to ``results/storage/benchmark.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import vmimage  # noqa: E402
from harness.checks import load_all, run_checks, select  # noqa: E402
from harness.checks.base import Runner  # noqa: E402
from tests.phases import Phases  # noqa: E402
from tests.storage import driver  # noqa: E402

logger = logging.getLogger("benchmarks.storage")

DEFAULT_MIB = 32
# Local disk of the VM: the root file system, not a tmpfs.
LOCAL_DIR = "/var/tmp"
# dd's last line: "33554432 bytes (34 MB, 32 MiB) copied, 1.95 s, 17.2 MB/s"
_DD = re.compile(r"^(\d+) bytes .* copied, ([\d.]+) s")


def parse_dd(text: str) -> float:
    """Return the MB/s (10^6 bytes per second) of dd's summary line."""
    for line in reversed(text.strip().splitlines()):
        match = _DD.match(line.strip())
        if match:
            seconds = float(match[2])
            return round(int(match[1]) / 1e6 / seconds, 1) if seconds else 0.0
    raise ValueError(f"no dd summary in {text!r}")


def throughput(host: Runner, directory: str, mib: int) -> dict[str, float]:
    """Return the write and read MB/s of ``mib`` MiB in ``directory`` on ``host``."""
    path = f"{directory.rstrip('/')}/.minicluster-bench-{os.getpid()}"
    # Random bytes (no compression or zero detection to help), made in memory
    # first so that the source costs nothing during the measurement.
    source = "/dev/shm/minicluster-bench"
    prepare = f"head -c {mib}M /dev/urandom > {source}"
    write = f"dd if={source} of={path} bs=1M conv=fsync 2>&1"
    # Dropping the page cache makes the read come from the disk or the server.
    read = (
        f"sync; echo 3 > /proc/sys/vm/drop_caches; dd if={path} of=/dev/null bs=1M 2>&1"
    )
    timeout = 30 + mib * 2
    try:
        if not host.run(prepare, timeout=timeout).ok:
            raise RuntimeError(f"{host.name}: could not make {source}")
        results = {}
        for name, command in (("write_MBps", write), ("read_MBps", read)):
            out = host.run(command, timeout=timeout)
            if not out.ok:
                raise RuntimeError(
                    f"{host.name}: {command!r}: {out.stdout}{out.stderr}"
                )
            results[name] = parse_dd(out.stdout)
        return results
    finally:
        host.run(f"rm -f {path} {source}", timeout=timeout)


def measure(
    ctx: Any, mib: int = DEFAULT_MIB, names: list[str] | None = None
) -> dict[str, Any]:
    """Return the throughput of each node (or of ``names``) on the share and disk."""
    mount_point = ctx.settings.nfs.mount_point
    nodes = {}
    for node in ctx.nodes:
        if names is not None and node.name not in names:
            continue
        host = ctx.host(node)
        nodes[node.name] = {
            "share": throughput(host, mount_point, mib),
            "local": throughput(host, LOCAL_DIR, mib),
        }
        logger.info("throughput on %s: %s", node.name, nodes[node.name])
    return {"mib": mib, "nodes": nodes}


def run_once(results: Path, mib: int) -> dict[str, Any]:
    """Run the storage VMs once; return the benchmark's record."""
    phases = Phases(results / "phases.json")
    record: dict[str, Any] = {}
    with driver.exclusive():
        state = driver.prepare_host()
        run = None
        try:
            with phases.phase("box"):
                box = vmimage.ensure_box()
            run = driver.StorageRun(results, os.environ, box.name)
            run.destroy()
            up = run.up()
            phases.record("boot", up.boot_s)
            phases.record("provision", up.provision_s)
            ctx = run.context()
            with phases.phase("checks"):
                rows = run_checks(ctx, select("storage", load_all().values()))
            failed = [f"{r.name} on {r.node}: {r.seen}" for r in rows if r.failed]
            if failed:
                raise RuntimeError("storage checks failed: " + "; ".join(failed))
            with phases.phase("throughput"):
                record["throughput"] = measure(ctx, mib)
        finally:
            with phases.phase("teardown"):
                problems = driver.tear_down(run, state)
    record |= {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "box": "warm" if not box.built else "cold",
        "phases": {row["phase"]: row["seconds"] for row in phases.rows},
        "teardown_problems": problems,
    }
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks/results/storage.json"
    )
    parser.add_argument("--mib", type=int, default=DEFAULT_MIB)
    parser.add_argument(
        "--results", type=Path, default=ROOT / "results/storage-benchmark"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    record = run_once(args.results, args.mib)
    history = json.loads(args.output.read_text()) if args.output.is_file() else []
    history.append(record)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
