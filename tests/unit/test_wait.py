"""The wait helper: logs each try, returns the last state, gives up with it."""

from __future__ import annotations

import logging

import pytest

from harness.errors import HarnessError, WaitTimeout
from harness.wait import until


def test_until_logs_each_try(caplog: pytest.LogCaptureFixture) -> None:
    states = iter(["worker-2: NotReady", "worker-2: NotReady", "worker-2: Ready"])

    def probe() -> tuple[bool, str]:
        state = next(states)
        return state.endswith(": Ready"), state

    caplog.set_level(logging.INFO, logger="harness.wait")
    assert until("worker-2 Ready", probe, sleep=lambda s: None) == "worker-2: Ready"
    assert "try 1, worker-2: NotReady" in caplog.text
    assert "try 2, worker-2: NotReady" in caplog.text


def test_until_counts_expected_errors_as_not_yet() -> None:
    answers = iter([HarnessError("cannot reach worker-1 over SSH\nmore"), None])

    def probe() -> tuple[bool, str]:
        answer = next(answers)
        if answer:
            raise answer
        return True, "reached"

    assert until("SSH", probe, sleep=lambda s: None) == "reached"


def test_until_gives_up_with_the_last_state(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in range(0, 1000, 5))
    monkeypatch.setattr("tenacity.time.monotonic", lambda: next(clock))
    tries = iter(range(1, 100))

    def probe() -> tuple[bool, str]:
        return False, f"worker-2: NotReady (try {next(tries)})"

    with pytest.raises(WaitTimeout) as info:
        until(
            "every node Ready", probe, timeout_s=20, interval_s=5, sleep=lambda s: None
        )
    text = str(info.value)
    assert text.startswith("timed out after 20 s waiting for every node Ready")
    assert f"tried {info.value.tries} times, 5 s apart" in text
    assert text.endswith(f"last seen: worker-2: NotReady (try {info.value.tries})")
