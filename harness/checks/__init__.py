"""Acceptance checks, one module per area of the design's criteria."""

from harness.checks.base import (
    CLUSTER,
    FAIL,
    PASS,
    REGISTRY,
    SKIP,
    Check,
    CheckResult,
    Context,
    cluster_check,
    failed,
    load_all,
    node_check,
    passed,
    run_checks,
    select,
    skipped,
)

__all__ = [
    "CLUSTER",
    "FAIL",
    "PASS",
    "REGISTRY",
    "SKIP",
    "Check",
    "CheckResult",
    "Context",
    "cluster_check",
    "failed",
    "load_all",
    "node_check",
    "passed",
    "run_checks",
    "select",
    "skipped",
]
