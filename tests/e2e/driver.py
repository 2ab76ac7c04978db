"""The end-to-end run's steps: Vagrant, ``minicluster``, node commands, phase times.

Every command runs in the checkout with the run's environment and appends its
output to a log file under the results directory; a failure raises
:class:`StepFailed` with the command, its exit code and the last lines.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, tail

logger = logging.getLogger(__name__)

# A skipped check is acceptable only for the NFS this host kernel lacks, as the
# checks say it: "this kernel has no nfsd ...", "this kernel has no nfs ...".
ALLOWED_SKIP = re.compile(r"\bkernel has no nfsd?\b", re.IGNORECASE)
VAGRANT_ENV = {
    "VAGRANT_NO_PARALLEL": "1",  # the control plane first, then the workers in order
    "VAGRANT_CHECKPOINT_DISABLE": "1",
    "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
    "VAGRANT_NO_COLOR": "1",
}
UP_TIMEOUT_S = 45 * 60
# Output lines worth showing while a long command runs.
PROGRESS = re.compile(r"^==> |^\s+\S+: (\+\+\+|!!!) ")
STEP_TIMEOUT_S = 15 * 60


class StepFailed(HarnessError):
    """A command of the run exited non-zero or timed out."""

    def __init__(self, command: str, exited: int, output: str, log: Path) -> None:
        super().__init__(command, exited, output, log)
        self.command, self.exited, self.output, self.log = command, exited, output, log

    def __str__(self) -> str:
        return (
            f"{self.command!r} exited {self.exited} (full output in {self.log}); "
            f"last lines:\n{tail(self.output)}"
        )


@dataclass(frozen=True)
class Verdict:
    """The rows of one ``minicluster verify --json`` and its exit code."""

    exited: int
    rows: list[dict[str, Any]]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "fail"]

    @property
    def unexplained_skips(self) -> list[dict[str, Any]]:
        """Return the skips whose reason is not a capability the kernel lacks."""
        return [
            r
            for r in self.rows
            if r["status"] == "skip"
            and not ALLOWED_SKIP.search(f"{r.get('seen', '')} {r.get('remedy', '')}")
        ]

    @property
    def is_green(self) -> bool:
        return self.exited == 0 and not self.failures and not self.unexplained_skips

    def describe(self) -> str:
        """Return one line per failed or unexplained row."""
        bad = self.failures + self.unexplained_skips
        return (
            "\n".join(
                f"{r['status']} {r['name']}[{r.get('node') or 'cluster'}]: "
                f"{r.get('seen', '')}"
                for r in bad
            )
            or f"exit {self.exited}, every row passed or was skipped for NFS"
        )


@dataclass
class Run:
    """One end-to-end run in the checkout ``root``."""

    root: Path
    results: Path
    env: dict[str, str]
    # What a phase leaves for a later one (ids of the containers, say).
    notes: dict[str, Any] = field(default_factory=dict)

    def _log(self, name: str) -> Path:
        self.results.mkdir(parents=True, exist_ok=True)
        return self.results / f"{name}.log"

    def run(
        self, args: list[str], log_name: str, timeout: float = STEP_TIMEOUT_S
    ) -> str:
        """Run ``args`` in the checkout; return its output or raise StepFailed.

        The output goes to the log file as it comes; Vagrant's ``==>`` lines and
        the provisioners' ``+++``/``!!!`` lines are logged too, to show progress.
        """
        log = self._log(log_name)
        command = " ".join(args)
        logger.info("RUN %s", command)
        lines: list[str] = []
        with log.open("a", encoding="utf-8") as out:
            out.write(f"\n$ {command}\n")
            with subprocess.Popen(
                args,
                cwd=self.root,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            ) as process:
                timed_out = threading.Event()

                def kill() -> None:
                    timed_out.set()
                    process.kill()

                timer = threading.Timer(timeout, kill)
                timer.start()
                try:
                    assert process.stdout is not None
                    for line in process.stdout:
                        out.write(line)
                        out.flush()
                        lines.append(line)
                        if PROGRESS.search(line):
                            logger.info("%s", line.rstrip())
                    exited = process.wait()
                finally:
                    timer.cancel()
        output = "".join(lines)
        if timed_out.is_set():
            output += f"\nkilled: timed out after {timeout:.0f} s"
        if exited != 0:
            raise StepFailed(command, exited, output, log)
        return output

    def vagrant(self, *args: str, timeout: float = STEP_TIMEOUT_S) -> str:
        return self.run(["vagrant", *args], f"vagrant-{args[0]}", timeout)

    def ssh(self, node: str, command: str) -> str:
        """Run ``command`` as root on ``node``; return its output."""
        return self.vagrant("ssh", node, "-c", f"sudo sh -c {_quote(command)}")

    def minicluster(self, *args: str, timeout: float = STEP_TIMEOUT_S) -> str:
        cli = [sys.executable, "-m", "harness.cli", *args]
        return self.run(cli, f"minicluster-{args[0]}", timeout)

    def verify(self, label: str) -> Verdict:
        """Run ``minicluster verify`` once; return its rows, failed or not."""
        path = self.results / f"verify-{label}.json"
        path.unlink(missing_ok=True)
        exited = 0
        try:
            self.minicluster("verify", "--json", str(path))
        except StepFailed as exc:
            exited = exc.exited
            if not path.is_file():
                raise
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Verdict(exited, doc["results"])

    def wait_green(
        self, label: str, timeout_s: float = 600, interval_s: float = 10
    ) -> Verdict:
        """Verify until every check passes (NFS skips aside); raise on timeout."""
        deadline = time.monotonic() + timeout_s
        tries = 0
        while True:
            tries += 1
            verdict = self.verify(f"{label}-{tries}")
            if verdict.is_green:
                return verdict
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not green after {timeout_s:.0f} s ({tries} verify runs); "
                    f"last:\n{verdict.describe()}"
                )
            logger.info(
                "On try %d, %s: not green yet:\n%s", tries, label, verdict.describe()
            )
            time.sleep(interval_s)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run_environment(
    base: Mapping[str, str], *, privileged: bool, bundle: Path | None
) -> dict[str, str]:
    """Return the environment of every command of the run."""
    env = {**base, **VAGRANT_ENV, "VAGRANT_DEFAULT_PROVIDER": "docker"}
    # The committed default is privileged; a host that cannot grant every
    # capability runs the nodes with the explicit set instead.
    env["MINICLUSTER_DOCKER_PRIVILEGED"] = "true" if privileged else "false"
    env.pop("MINICLUSTER_BUNDLE_PATH", None)
    if bundle is not None:
        env["MINICLUSTER_BUNDLE_PATH"] = str(bundle)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def docker_lines(*args: str) -> list[str]:
    """Return the output lines of a docker command."""
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    )
    return [line for line in done.stdout.splitlines() if line.strip()]
