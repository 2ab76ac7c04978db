"""Attach to the cluster of a checkout: its settings, SSH runners and API client."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks import CheckResult, Context, load_all, run_checks, select
from harness.errors import NoCluster
from harness.kube import Kube, kubeconfig_path, parse_node
from harness.remote import Host, close_all, hosts_from_vagrant
from harness.settings import dotfile_dir
from harness.vagrant import Vagrant
from harness.wait import until

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 600


def created_machines(root: Path, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Return the machines Vagrant has created for ``root`` (by their id files)."""
    machines = dotfile_dir(root, environ) / "machines"
    return sorted({p.parent.parent.name for p in machines.glob("*/*/id")})


@dataclass
class Cluster:
    """A running cluster: settings, one Host per running node, the kubeconfig."""

    settings: Any
    vagrant: Vagrant
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return kubeconfig_path(self.settings.root)

    def context(self) -> Context:
        return Context(
            self.settings, self.hosts, kube_factory=lambda: Kube(self.kubeconfig)
        )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        """Wait until every node of the settings is registered and Ready."""
        names = [node.name for node in self.settings.nodes]

        def probe() -> tuple[bool, str]:
            known = {
                info.name: info
                for info in map(parse_node, Kube(self.kubeconfig).nodes())
            }
            states = [
                f"{name}: {'Ready' if known[name].is_ready else 'NotReady'}"
                if name in known
                else f"{name}: not registered"
                for name in names
            ]
            done = all(name in known and known[name].is_ready for name in names)
            return done, ", ".join(states)

        return until("every node Ready", probe, timeout_s=timeout_s, interval_s=5)

    def close(self) -> None:
        close_all(self.hosts)


def attach(settings: Any, vagrant: Vagrant | None = None) -> Cluster:
    """Return the running cluster of ``settings``; raise NoCluster if there is none."""
    root = settings.root
    if not created_machines(root):
        raise NoCluster(f"no cluster has been created in {root}")
    vagrant = vagrant or Vagrant(root, settings.provider)
    return Cluster(settings, vagrant, hosts_from_vagrant(vagrant))


def verify(
    ctx: Context, expr: str | None = None, parallel: bool = True
) -> tuple[list[CheckResult], float]:
    """Run the checks matching ``expr``; return their rows and the wall time."""
    checks = select(expr, load_all().values())
    start = time.monotonic()
    rows = run_checks(ctx, checks, parallel=parallel)
    return rows, time.monotonic() - start


def checks_named(expr: str | None) -> Sequence[str]:
    return [check.name for check in select(expr, load_all().values())]
