"""The ``minicluster`` command: up, verify, status, diagnose, kubeconfig, down.

Exit codes: 0 all good, 1 a check or a step failed, 2 a usage or settings
error, or no cluster to work on. Expected errors print one explanation and no
traceback; ``-v`` shows debug logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import report
from harness.errors import HarnessError, NoCluster, VagrantError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(HarnessError):
    """The command line or the settings are wrong (exit 2)."""


def _settings(args: argparse.Namespace) -> Any:
    from harness import settings

    provider = getattr(args, "provider", None)
    try:
        return settings.load(args.root, provider=provider)
    except settings.SettingsError as exc:
        raise UsageError(f"invalid settings:\n{exc}") from exc


def _attach(args: argparse.Namespace) -> Any:
    from harness.cluster import attach

    return attach(_settings(args))


def _verify(args: argparse.Namespace, cluster: Any) -> int:
    from harness.cluster import verify

    rows, elapsed = verify(cluster.context(), args.k, parallel=not args.serial)
    report.out(report.table(rows))
    report.out(report.summary(rows, elapsed))
    if args.json:
        report.write_json(rows, args.json, elapsed)
    if args.junitxml:
        report.write_junit(rows, args.junitxml, elapsed)
    return EXIT_FAILED if any(r.failed for r in rows) else EXIT_OK


def _check_expression(expr: str | None) -> None:
    """Refuse a bad or empty -k before any machine is asked."""
    from harness.checks import load_all, select

    try:
        picked = select(expr, load_all().values())
    except HarnessError as exc:
        raise UsageError(str(exc)) from exc
    if not picked:
        raise UsageError(f"-k {expr!r} selects no check")


def cmd_verify(args: argparse.Namespace) -> int:
    _check_expression(args.k)
    cluster = _attach(args)
    try:
        return _verify(args, cluster)
    finally:
        cluster.close()


def cmd_up(args: argparse.Namespace) -> int:
    from harness.cluster import attach
    from harness.vagrant import Vagrant, parse_progress

    # Preflight: the settings must hold before any machine is touched.
    _check_expression(args.k)
    settings = _settings(args)
    report.out(
        f"bringing up {len(settings.nodes)} nodes with {settings.provider}: "
        + ", ".join(f"{n.name} ({n.address})" for n in settings.nodes)
    )
    vagrant = Vagrant(settings.root, settings.provider)
    log_path = settings.shared_dir / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    last: deque[str] = deque(maxlen=20)
    provisioners: dict[str, str] = {}
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        try:
            for line in vagrant.up():
                log.write(line)
                last.append(line.rstrip("\n"))
                progress = parse_progress(line, provisioners)
                if progress is None:
                    continue
                if progress.provisioner and not progress.output:
                    provisioners[progress.node] = progress.provisioner
                if not progress.output or args.verbose:
                    mins, secs = divmod(int(time.monotonic() - start), 60)
                    report.out(
                        f"[{mins:2d}:{secs:02d}] {progress.node}: {progress.phase}"
                    )
        except VagrantError as exc:
            exc.output = "\n".join(last) + "\n" + exc.output
            exc.hint = f"full log: {log_path}; `minicluster diagnose` checks the host"
            raise
    # Wait for Ready, then verify.
    cluster = attach(settings, vagrant)
    try:
        report.out(cluster.wait_ready())
        return _verify(args, cluster)
    finally:
        cluster.close()


def cmd_status(args: argparse.Namespace) -> int:
    from harness.kube import Kube, kubeconfig_path, parse_node
    from harness.vagrant import Vagrant

    settings = _settings(args)
    states = {s.name: s for s in Vagrant(settings.root, settings.provider).status()}
    ready: dict[str, str] = {}
    kubeconfig = kubeconfig_path(settings.root)
    if kubeconfig.is_file() and any(s.is_running for s in states.values()):
        try:
            for info in map(parse_node, Kube(kubeconfig).nodes()):
                ready[info.name] = "Ready" if info.is_ready else "NotReady"
        except HarnessError as exc:
            report.out(f"API server: {str(exc).splitlines()[0]}")
    report.out(f"{'NODE':<16} {'ROLE':<14} {'ADDRESS':<16} {'VAGRANT':<12} KUBERNETES")
    for node in settings.nodes:
        state = states[node.name].state if node.name in states else "unknown"
        report.out(
            f"{node.name:<16} {node.role:<14} {node.address:<16} {state:<12} "
            f"{ready.get(node.name, '-')}"
        )
    return EXIT_OK


def cmd_diagnose(args: argparse.Namespace) -> int:
    from harness.diagnose import diagnose

    rows = diagnose(_settings(args))
    report.out(report.table(rows))
    return EXIT_FAILED if any(r.failed for r in rows) else EXIT_OK


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from harness.kube import kubeconfig_path

    path = kubeconfig_path(_settings(args).root)
    if not path.is_file():
        raise NoCluster(f"no kubeconfig at {path}")
    report.out(f"export KUBECONFIG={path}" if args.export else str(path))
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from harness.cluster import created_machines
    from harness.vagrant import Vagrant

    settings = _settings(args)
    if not created_machines(settings.root):
        report.out(f"no cluster in {settings.root}: nothing to do")
        return EXIT_OK
    vagrant = Vagrant(settings.root, settings.provider)
    if args.halt:
        vagrant.halt()
    else:
        vagrant.destroy()
    return EXIT_OK


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", metavar="EXPR", help="only checks matching EXPR")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write JSON results")
    parser.add_argument("--junitxml", type=Path, metavar="FILE", help="write JUnit XML")
    parser.add_argument(
        "--serial", action="store_true", help="one node at a time (for comparison)"
    )


def build_parser() -> argparse.ArgumentParser:
    from harness.settings import ROOT

    parser = argparse.ArgumentParser(
        prog="minicluster", description="Bring up and verify the MiniCluster."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="checkout with cluster.yaml and the Vagrantfile (default: %(default)s)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more output (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="preflight, vagrant up, wait for Ready, verify")
    up.add_argument("--provider", help="virtualbox, libvirt or docker")
    _add_verify_options(up)
    up.set_defaults(func=cmd_up)

    verify = sub.add_parser("verify", help="run the acceptance checks")
    _add_verify_options(verify)
    verify.set_defaults(func=cmd_verify)

    sub.add_parser("status", help="nodes, their Vagrant state and Ready").set_defaults(
        func=cmd_status
    )
    sub.add_parser(
        "diagnose", help="host prerequisites and common failure causes"
    ).set_defaults(func=cmd_diagnose)

    kubeconfig = sub.add_parser("kubeconfig", help="print the kubeconfig's path")
    kubeconfig.add_argument(
        "--export", action="store_true", help="print `export KUBECONFIG=...`"
    )
    kubeconfig.set_defaults(func=cmd_kubeconfig)

    down = sub.add_parser("down", help="destroy the nodes (or --halt them)")
    down.add_argument("--halt", action="store_true", help="stop, keep the disks")
    down.set_defaults(func=cmd_down)

    # Subcommands of the other parts of the project, one line each.
    from harness import bundle, nodeimage, vmimage

    nodeimage.add_parser(sub)
    bundle.add_parser(sub)
    vmimage.add_parser(sub)
    return parser


def _configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    if verbose < 2:
        # Their INFO lines are per request; ours say what the harness does.
        for noisy in ("paramiko", "invoke", "fabric", "urllib3", "kubernetes"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    from harness.settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        code: int = args.func(args)
    except (UsageError, NoCluster, SettingsError) as exc:
        report.err(f"minicluster {args.command}: {exc}")
        return EXIT_USAGE
    except HarnessError as exc:
        report.err(f"minicluster {args.command}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        report.err(f"minicluster {args.command}: interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
