"""Results for people and machines: the terminal table, JSON, and JUnit XML."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from harness.checks.base import CheckResult

MARK = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}


def out(text: str = "", stream: TextIO | None = None) -> None:
    """Write one line for the user (the CLI's only way to the terminal)."""
    print(text, file=stream or sys.stdout, flush=True)


def err(text: str) -> None:
    out(text, sys.stderr)


def table(rows: Sequence[CheckResult]) -> str:
    """Return one line per check and node; failures add what was seen and the fix."""
    if not rows:
        return "no check selected"
    name_w = max(len("CHECK"), *(len(r.name) for r in rows))
    node_w = max(len("NODE"), *(len(r.node) for r in rows))
    lines = [f"{'CHECK':<{name_w}}  {'NODE':<{node_w}}  RESULT  {'TIME':>6}  SEEN"]
    for r in rows:
        lines.append(
            f"{r.name:<{name_w}}  {r.node:<{node_w}}  {MARK[r.status]:<6}  "
            f"{r.duration_s:>5.2f}s  {first_line(r.seen)}"
        )
        if r.failed:
            for extra in r.seen.splitlines()[1:]:
                lines.append(f"{'':<{name_w + node_w + 20}}{extra}")
            if r.remedy:
                lines.append(f"{'':<{name_w + node_w + 20}}fix: {r.remedy}")
    return "\n".join(lines)


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def summary(rows: Sequence[CheckResult], elapsed_s: float) -> str:
    """Return "12 passed, 1 failed, 2 skipped in 3.1 s"."""
    counts = Counter(r.status for r in rows)
    return (
        f"{counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped in {elapsed_s:.1f} s"
    )


def write_json(rows: Sequence[CheckResult], path: Path, elapsed_s: float) -> None:
    counts = Counter(r.status for r in rows)
    doc = {
        "passed": counts["pass"],
        "failed": counts["fail"],
        "skipped": counts["skip"],
        "duration_s": round(elapsed_s, 3),
        "results": [r.to_dict() for r in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def write_junit(rows: Sequence[CheckResult], path: Path, elapsed_s: float) -> None:
    """Write JUnit XML: a testcase per row, named ``check[node]``."""
    counts = Counter(r.status for r in rows)
    suite = ET.Element(
        "testsuite",
        name="minicluster.verify",
        tests=str(len(rows)),
        failures=str(counts["fail"]),
        skipped=str(counts["skip"]),
        errors="0",
        time=f"{elapsed_s:.3f}",
    )
    for r in rows:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"minicluster.{r.name.split('.', 1)[0]}",
            name=f"{r.name}[{r.node}]",
            time=f"{r.duration_s:.3f}",
        )
        if r.failed:
            failure = ET.SubElement(case, "failure", message=first_line(r.seen))
            failure.text = f"{r.seen}\nfix: {r.remedy}" if r.remedy else r.seen
        elif r.skipped:
            ET.SubElement(case, "skipped", message=first_line(r.seen))
        else:
            ET.SubElement(case, "system-out").text = r.seen
    suites = ET.Element("testsuites")
    suites.append(suite)
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
