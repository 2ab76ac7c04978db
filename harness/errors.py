"""Exceptions of the harness: each says what failed, where, and what was seen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TAIL_LINES = 10


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``text``, indented for a message."""
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in kept) if kept else "  (empty)"


class HarnessError(Exception):
    """Base of every error the harness expects and reports without a traceback."""


@dataclass(frozen=True)
class Result:
    """The outcome of one command on one host."""

    host: str
    command: str
    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0


class CommandFailed(HarnessError):
    """A command exited non-zero where success was required."""

    def __init__(self, result: Result, hint: str = "") -> None:
        super().__init__(result)
        self.result = result
        self.hint = hint

    def __str__(self) -> str:
        r = self.result
        lines = [
            f"command {r.command!r} on {r.host} exited {r.exited}",
            f"stdout (last {TAIL_LINES} lines):",
            tail(r.stdout),
            f"stderr (last {TAIL_LINES} lines):",
            tail(r.stderr),
        ]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class ConnectionFailed(HarnessError):
    """A host could not be reached over SSH."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(host, address, reason)
        self.host = host
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"cannot reach {self.host} over SSH at {self.address}: {self.reason}; "
            "is the node running (`minicluster status`)?"
        )


class WaitTimeout(HarnessError):
    """A wait gave up; carries the last state seen."""

    def __init__(
        self, what: str, timeout_s: float, tries: int, interval_s: float, last: str
    ) -> None:
        super().__init__(what, timeout_s, tries, interval_s, last)
        self.what = what
        self.timeout_s = timeout_s
        self.tries = tries
        self.interval_s = interval_s
        self.last = last

    def __str__(self) -> str:
        return (
            f"timed out after {self.timeout_s:.0f} s waiting for {self.what}; "
            f"tried {self.tries} times, {self.interval_s:g} s apart; "
            f"last seen: {self.last}"
        )


class VagrantError(HarnessError):
    """A vagrant command failed; carries its arguments and output."""

    def __init__(
        self, args: Sequence[str], exited: int, output: str, hint: str = ""
    ) -> None:
        super().__init__(list(args), exited, output, hint)
        self.args_ = list(args)
        self.exited = exited
        self.output = output
        self.hint = hint

    def __str__(self) -> str:
        lines = [
            f"vagrant {' '.join(self.args_)} exited {self.exited}",
            f"output (last {TAIL_LINES} lines):",
            tail(self.output),
        ]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class NoCluster(HarnessError):
    """No cluster exists (never created, or destroyed); says how to make one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}; run `minicluster up` (or `vagrant up`) first"


class KubeError(HarnessError):
    """The Kubernetes API could not be reached or refused a request."""
