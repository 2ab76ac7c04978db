"""What a check is, what it returns, and how checks are registered, picked and run.

A check is a plain function. A node check takes ``(ctx, node)`` and returns one
:class:`CheckResult`; a cluster check takes ``(ctx)`` and returns a list of them.
The runner fills in the check's name, the node and the duration, turns expected
errors into failures, and runs everything in parallel, the commands on a node
sharing that node's single SSH connection. For example::

    @node_check("hosts.swap_off", remedy="run `swapoff -a` and drop swap from fstab")
    def swap_off(ctx, node):
        out = ctx.host(node).run("swapon --noheadings").stdout
        return passed("no swap") if not out.strip() else failed(out)

``select("hosts and not swap")`` picks checks as pytest's ``-k`` picks tests.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

from harness.errors import HarnessError, Result

if TYPE_CHECKING:
    from harness.kube import Kube

logger = logging.getLogger(__name__)

Status = Literal["pass", "fail", "skip"]
PASS: Status = "pass"
FAIL: Status = "fail"
SKIP: Status = "skip"
CLUSTER = "cluster"  # the node column of checks about the cluster as a whole
MAX_THREADS = 32


@dataclass(frozen=True)
class CheckResult:
    """One row of the report: a check on one node (or on the cluster)."""

    name: str
    node: str
    status: Status
    seen: str = ""
    remedy: str = ""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    @property
    def skipped(self) -> bool:
        return self.status == SKIP

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "status": self.status,
            "seen": self.seen,
            "remedy": self.remedy,
            "duration_s": round(self.duration_s, 3),
        }


def passed(seen: str = "", node: str = "") -> CheckResult:
    """Return a pass; the runner fills in the name and duration."""
    return CheckResult("", node, PASS, seen)


def failed(seen: str, remedy: str = "", node: str = "") -> CheckResult:
    """Return a failure with what was seen; an empty remedy takes the check's."""
    return CheckResult("", node, FAIL, seen, remedy)


def skipped(reason: str, node: str = "") -> CheckResult:
    """Return a skip: the check cannot apply here, for ``reason``."""
    return CheckResult("", node, SKIP, reason)


class NodeSpec(Protocol):
    """The part of ``harness.settings.Node`` the checks read."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def address(self) -> str: ...


class Runner(Protocol):
    """A per-node remote runner (``harness.remote.Host`` is the real one)."""

    name: str

    def run(self, command: str, timeout: float | None = None) -> Result: ...

    def check_output(self, command: str, timeout: float | None = None) -> str: ...


@dataclass
class Context:
    """Everything a check may read: settings, one runner per node, the API client.

    ``settings`` is a ``harness.settings.Settings`` (or anything shaped like it);
    ``hosts`` maps node name to runner; ``kube_factory`` builds the Kubernetes
    client on first use, so host-only runs never touch the API.
    """

    settings: Any
    hosts: Mapping[str, Runner] = field(default_factory=dict)
    kube_factory: Callable[[], Kube] | None = None
    # How long one probe (HTTP request, pod to pod ping) may take.
    probe_timeout_s: float = 10.0
    # Addresses from which the host reaches node ports, when they differ from the
    # node addresses (the docker provider on a machine routing only loopback).
    node_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> Sequence[NodeSpec]:
        return list(self.settings.nodes)

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise HarnessError(f"no node named {name!r} in the settings")

    def host(self, node: NodeSpec | str) -> Runner:
        name = node if isinstance(node, str) else node.name
        try:
            return self.hosts[name]
        except KeyError:
            raise HarnessError(
                f"no SSH runner for node {name!r}; is it running "
                "(`minicluster status`)?"
            ) from None

    _kube_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False
    )

    @property
    def kube(self) -> Kube:
        # Cluster checks run in parallel threads; build the client only once.
        with self._kube_lock:
            if "_kube" not in self.__dict__:
                if self.kube_factory is None:
                    raise HarnessError("no Kubernetes client for these checks")
                self.__dict__["_kube"] = self.kube_factory()
            kube: Kube = self.__dict__["_kube"]
            return kube


NodeFunc = Callable[[Context, Any], CheckResult]
ClusterFunc = Callable[[Context], list[CheckResult]]
NodeFilter = Callable[[Context], Iterable[NodeSpec]]


@dataclass(frozen=True)
class Check:
    """A registered check: its name, area, default remedy and function."""

    name: str
    area: str
    remedy: str
    func: Callable[..., Any]
    scope: Literal["node", "cluster"]
    needs: frozenset[str]  # "ssh", "kube": what the check talks to
    nodes: NodeFilter | None = None

    def targets(self, ctx: Context) -> list[NodeSpec]:
        """Return the nodes a node check runs on."""
        return list(self.nodes(ctx) if self.nodes else ctx.nodes)

    def run(self, ctx: Context) -> list[CheckResult]:
        """Run this check alone (serially over its nodes) and return its rows."""
        if self.scope == "cluster":
            return _run_cluster(self, ctx)
        return [_run_node(self, ctx, node) for node in self.targets(ctx)]


REGISTRY: dict[str, Check] = {}


def _register(check: Check) -> None:
    if check.name in REGISTRY:
        raise ValueError(f"check {check.name!r} is registered twice")
    REGISTRY[check.name] = check


def node_check(
    name: str,
    *,
    remedy: str,
    needs: Iterable[str] = ("ssh",),
    nodes: NodeFilter | None = None,
) -> Callable[[NodeFunc], NodeFunc]:
    """Register ``func(ctx, node) -> CheckResult`` as check ``name``."""

    def decorate(func: NodeFunc) -> NodeFunc:
        area = name.split(".", 1)[0]
        _register(Check(name, area, remedy, func, "node", frozenset(needs), nodes))
        return func

    return decorate


def cluster_check(
    name: str, *, remedy: str, needs: Iterable[str] = ("kube",)
) -> Callable[[ClusterFunc], ClusterFunc]:
    """Register ``func(ctx) -> list[CheckResult]`` as check ``name``."""

    def decorate(func: ClusterFunc) -> ClusterFunc:
        area = name.split(".", 1)[0]
        _register(Check(name, area, remedy, func, "cluster", frozenset(needs)))
        return func

    return decorate


def load_all() -> dict[str, Check]:
    """Import every check module so that each registers itself; return the registry."""
    import importlib

    for module in ("nodes", "hosts", "control_plane", "network", "storage", "nginx"):
        try:
            importlib.import_module(f"harness.checks.{module}")
        except ModuleNotFoundError as exc:
            # A module of an area not written yet leaves that area out; a missing
            # dependency inside an existing module is a real error.
            if exc.name != f"harness.checks.{module}":
                raise
            logger.debug("no check module harness.checks.%s", module)
    return REGISTRY


# -k expressions, as in pytest: words matched as substrings of "area.name",
# combined with and, or, not and parentheses.
_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class _Matcher:
    def __init__(self, expr: str) -> None:
        self.tokens = _TOKEN.findall(expr)
        self.pos = 0
        self.expr = expr

    def parse(self) -> Callable[[str], bool]:
        if not self.tokens:
            return lambda _name: True
        match = self._or()
        if self.pos != len(self.tokens):
            self._error(f"unexpected {self.tokens[self.pos]!r}")
        return match

    def _error(self, problem: str) -> NoReturn:
        raise HarnessError(
            f"-k {self.expr!r}: {problem}; write words joined by and/or/not, "
            "e.g. -k 'hosts and not swap'"
        )

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            self._error("ends too early")
        self.pos += 1
        return token

    def _or(self) -> Callable[[str], bool]:
        terms = [self._and()]
        while self._peek() == "or":
            self._take()
            terms.append(self._and())
        return lambda name: any(term(name) for term in terms)

    def _and(self) -> Callable[[str], bool]:
        terms = [self._not()]
        while self._peek() == "and":
            self._take()
            terms.append(self._not())
        return lambda name: all(term(name) for term in terms)

    def _not(self) -> Callable[[str], bool]:
        if self._peek() == "not":
            self._take()
            inner = self._not()
            return lambda name: not inner(name)
        return self._atom()

    def _atom(self) -> Callable[[str], bool]:
        token = self._take()
        if token == "(":
            inner = self._or()
            if self._take() != ")":
                self._error("missing ')'")
            return inner
        if token in {")", "and", "or"}:
            self._error(f"unexpected {token!r}")
        word = token.lower()
        return lambda name: word in name.lower()


def select(expr: str | None, checks: Iterable[Check] | None = None) -> list[Check]:
    """Return the checks whose name matches the -k expression ``expr``."""
    pool = list(REGISTRY.values() if checks is None else checks)
    if not expr:
        return pool
    match = _Matcher(expr).parse()
    return [check for check in pool if match(check.name)]


def _finish(check: Check, node: str, result: CheckResult, start: float) -> CheckResult:
    return replace(
        result,
        name=check.name,
        node=result.node or node,
        remedy=result.remedy or (check.remedy if result.failed else ""),
        duration_s=time.monotonic() - start,
    )


def _run_node(check: Check, ctx: Context, node: NodeSpec) -> CheckResult:
    start = time.monotonic()
    try:
        result = check.func(ctx, node)
    except HarnessError as exc:
        result = failed(str(exc))
    except Exception as exc:
        logger.exception("check %s crashed on %s", check.name, node.name)
        result = failed(f"check crashed: {type(exc).__name__}: {exc}")
    out = _finish(check, node.name, result, start)
    logger.debug("%s on %s: %s %s", check.name, node.name, out.status, out.seen)
    return out


def _run_cluster(check: Check, ctx: Context) -> list[CheckResult]:
    start = time.monotonic()
    try:
        results = check.func(ctx)
    except HarnessError as exc:
        results = [failed(str(exc))]
    except Exception as exc:
        logger.exception("check %s crashed", check.name)
        results = [failed(f"check crashed: {type(exc).__name__}: {exc}")]
    if not results:
        results = [failed("the check returned no result")]
    # Rows of one cluster check share its duration.
    return [_finish(check, CLUSTER, result, start) for result in results]


def run_checks(
    ctx: Context, checks: Sequence[Check], parallel: bool = True
) -> list[CheckResult]:
    """Run ``checks`` and return their rows, in check order then node order.

    In parallel every check on every node runs in its own thread; the commands
    on one node share that node's SSH connection as separate channels (see
    ``harness.remote.Host``). Serially everything runs in this thread.
    """
    jobs: list[tuple[Check, NodeSpec | None]] = []
    for check in checks:
        if check.scope == "cluster":
            jobs.append((check, None))
        else:
            jobs.extend((check, node) for node in check.targets(ctx))

    def job(item: tuple[Check, NodeSpec | None]) -> list[CheckResult]:
        check, node = item
        if node is None:
            return _run_cluster(check, ctx)
        return [_run_node(check, ctx, node)]

    if parallel and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(jobs))) as pool:
            batches = list(pool.map(job, jobs))
    else:
        batches = [job(item) for item in jobs]

    rows = [row for batch in batches for row in batch]
    order = {check.name: i for i, check in enumerate(checks)}
    node_order = {node.name: i for i, node in enumerate(ctx.nodes)}
    rows.sort(key=lambda r: (order[r.name], node_order.get(r.node, len(node_order))))
    return rows
