"""The check registry, -k selection and the runner's rules."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from harness.checks import base
from harness.checks.base import (
    Check,
    Context,
    cluster_check,
    failed,
    node_check,
    passed,
    run_checks,
    select,
    skipped,
)
from harness.errors import CommandFailed, HarnessError, Result
from tests.unit.fakes import FakeSettings


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Check]:
    """Return an empty registry in place of the real one."""
    base.load_all()  # the real checks register in the real registry first
    empty: dict[str, Check] = {}
    monkeypatch.setattr(base, "REGISTRY", empty)
    return empty


NAMES = [
    "hosts.swap_off",
    "hosts.ip_forward",
    "nodes.ready",
    "nginx.node_port",
    "storage.mounted",
]


@pytest.mark.parametrize(
    ("expr", "picked"),
    [
        (None, NAMES),
        ("hosts", ["hosts.swap_off", "hosts.ip_forward"]),
        ("not hosts", ["nodes.ready", "nginx.node_port", "storage.mounted"]),
        ("hosts and not swap", ["hosts.ip_forward"]),
        ("ready or node_port", ["nodes.ready", "nginx.node_port"]),
        # parentheses, and case does not matter
        ("(HOSTS or nginx) and not (swap or ip)", ["nginx.node_port"]),
    ],
)
def test_select(
    registry: dict[str, Check], expr: str | None, picked: list[str]
) -> None:
    for name in NAMES:
        node_check(name, remedy="")(lambda ctx, node: passed())
    assert [c.name for c in select(expr)] == picked


@pytest.mark.parametrize("expr", ["hosts and", "(hosts", "or", "hosts )"])
def test_select_bad_expression_says_how(registry: dict[str, Check], expr: str) -> None:
    with pytest.raises(HarnessError, match="words joined by and/or/not"):
        select(expr)


def test_register_twice_is_refused(registry: dict[str, Check]) -> None:
    node_check("hosts.x", remedy="")(lambda ctx, node: passed())
    with pytest.raises(ValueError, match="registered twice"):
        node_check("hosts.x", remedy="")(lambda ctx, node: passed())


def ctx() -> Context:
    return Context(FakeSettings())


def test_runner_fills_name_node_remedy_and_keeps_order(
    registry: dict[str, Check],
) -> None:
    @node_check("a.fails", remedy="do X")
    def fails(ctx: Context, node: Any) -> Any:
        return failed(f"bad on {node.name}")

    @cluster_check("b.cluster", remedy="do Y")
    def whole(ctx: Context) -> list[Any]:
        return [passed("fine")]

    rows = run_checks(ctx(), list(registry.values()))
    assert [(r.name, r.node, r.status) for r in rows] == [
        ("a.fails", "control-plane", "fail"),
        ("a.fails", "worker-1", "fail"),
        ("a.fails", "worker-2", "fail"),
        ("b.cluster", "cluster", "pass"),
    ]
    assert rows[1].seen == "bad on worker-1"
    assert rows[1].remedy == "do X"
    assert rows[3].remedy == ""  # a pass carries no remedy


def test_errors_and_crashes_are_failures_never_passes(
    registry: dict[str, Check],
) -> None:
    @node_check("a.raises", remedy="look at the node")
    def raises(ctx: Context, node: Any) -> Any:
        if node.name == "worker-1":
            raise CommandFailed(
                Result("worker-1", "systemctl is-active kubelet", 3, "inactive\n", "")
            )
        if node.name == "worker-2":
            raise KeyError("surprise")
        return passed()

    rows = {r.node: r for r in run_checks(ctx(), list(registry.values()))}
    assert rows["control-plane"].passed
    assert rows["worker-1"].failed
    assert (
        "command 'systemctl is-active kubelet' on worker-1 exited 3"
        in rows["worker-1"].seen
    )
    assert rows["worker-2"].failed
    assert rows["worker-2"].seen == "check crashed: KeyError: 'surprise'"


def test_skip_stays_a_skip(registry: dict[str, Check]) -> None:
    @node_check("a.skips", remedy="", nodes=lambda ctx: ctx.nodes[:1])
    def skips(ctx: Context, node: Any) -> Any:
        return skipped("this kernel has no nfsd")

    rows = run_checks(ctx(), list(registry.values()))
    assert [(r.node, r.status, r.seen) for r in rows] == [
        ("control-plane", "skip", "this kernel has no nfsd")
    ]


def test_cluster_check_returning_nothing_fails(registry: dict[str, Check]) -> None:
    cluster_check("a.empty", remedy="")(lambda ctx: [])
    rows = run_checks(ctx(), list(registry.values()))
    assert rows[0].failed


def test_parallel_runs_nodes_at_once(registry: dict[str, Check]) -> None:
    # Three nodes meet at a barrier: only a parallel run gets past it.
    barrier = threading.Barrier(3, timeout=5)

    @node_check("a.meet", remedy="")
    def meet(ctx: Context, node: Any) -> Any:
        barrier.wait()
        return passed()

    rows = run_checks(ctx(), list(registry.values()), parallel=True)
    assert all(r.passed for r in rows)


def test_missing_runner_names_the_node() -> None:
    with pytest.raises(HarnessError, match="no SSH runner for node 'worker-1'"):
        ctx().host("worker-1")


def test_every_criterion_has_checks() -> None:
    areas = {c.area for c in base.load_all().values()}
    assert {"nodes", "hosts", "control_plane", "network", "nginx"} <= areas
    assert all(c.remedy for c in base.load_all().values())
