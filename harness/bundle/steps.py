"""Cached build steps: each writes one output atomically and is skipped once it exists.

A step writes to a temporary sibling of its output and renames it into place only
when it has finished, so an interrupted build leaves no half-written output and the
next run resumes at the first step whose output is missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

logger = logging.getLogger(__name__)


class BuildError(HarnessError):
    """A bundle build step failed; says which step, what ran and what it printed."""

    def __init__(self, step: str, detail: str, hint: str = "") -> None:
        super().__init__(step, detail, hint)
        self.step = step
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        text = f"bundle build failed at {self.step!r}: {self.detail}"
        return f"{text}\n{self.hint}" if self.hint else text


@dataclass(frozen=True)
class Step:
    """One unit of work whose result is ``output`` (a file or a directory)."""

    title: str | Callable[[], str]  # callable when it names a version found earlier
    output: Path
    make: Callable[[Path], object]  # writes the output at the path it is given


def run_steps(steps: Sequence[Step]) -> dict[str, float]:
    """Run each step whose output is missing; return the seconds spent per step."""
    spent: dict[str, float] = {}
    for number, step in enumerate(steps, start=1):
        title = step.title if isinstance(step.title, str) else step.title()
        if step.output.exists():
            logger.info("step %d/%d: %s (cached)", number, len(steps), title)
            continue
        logger.info("step %d/%d: %s", number, len(steps), title)
        started = time.monotonic()
        produce(step.output, step.make)
        spent[title] = time.monotonic() - started
        logger.info("step %d/%d: done in %.1f s", number, len(steps), spent[title])
    return spent


def produce(output: Path, make: Callable[[Path], object]) -> None:
    """Call ``make`` on a temporary path, then rename the result to ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    remove(partial)  # left over from an interrupted run
    try:
        make(partial)
    except BaseException:
        remove(partial)
        raise
    os.replace(partial, output)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run(
    step: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    hint: str = "",
) -> str:
    """Run ``argv`` and return its stdout; raise :class:`BuildError` if it fails."""
    logger.debug("RUN %s (in %s)", " ".join(map(str, argv)), cwd or ".")
    try:
        done = subprocess.run(
            [str(arg) for arg in argv],
            cwd=cwd,
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildError(step, f"{argv[0]} is not installed", hint) from exc
    if done.returncode != 0:
        last = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BuildError(
            step,
            f"`{' '.join(map(str, argv))}` exited {done.returncode}:\n{last}",
            hint,
        )
    return done.stdout
