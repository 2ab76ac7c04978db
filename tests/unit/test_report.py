"""The table, the JSON and the JUnit XML of a verify run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.checks import CheckResult
from harness.report import summary, table, write_json, write_junit

ROWS = [
    CheckResult("hosts.swap_off", "worker-1", "pass", "no swap", "", 0.05),
    CheckResult(
        "hosts.ip_forward",
        "worker-2",
        "fail",
        "net.ipv4.ip_forward = 0",
        "run sysctl",
        0.04,
    ),
    CheckResult(
        "hosts.nfs_server_active", "control-plane", "skip", "no nfsd", "", 0.02
    ),
]


def test_table_shows_failures_with_remedy() -> None:
    text = table(ROWS)
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "NODE", "RESULT", "TIME", "SEEN"]
    assert "hosts.ip_forward" in lines[2]
    assert "FAIL" in lines[2]
    assert "net.ipv4.ip_forward = 0" in lines[2]
    assert lines[3].strip() == "fix: run sysctl"
    assert "SKIP" in lines[4]


def test_summary() -> None:
    assert summary(ROWS, 1.234) == "1 passed, 1 failed, 1 skipped in 1.2 s"


def test_json(tmp_path: Path) -> None:
    path = tmp_path / "out" / "verify.json"
    write_json(ROWS, path, 1.5)
    doc = json.loads(path.read_text())
    assert (doc["passed"], doc["failed"], doc["skipped"]) == (1, 1, 1)
    assert doc["results"][1]["remedy"] == "run sysctl"


def test_junit(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(ROWS, path, 1.5)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "3",
        "1",
        "1",
    )
    cases = suite.findall("testcase")
    assert cases[1].get("name") == "hosts.ip_forward[worker-2]"
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "net.ipv4.ip_forward = 0"
    assert cases[2].find("skipped") is not None
