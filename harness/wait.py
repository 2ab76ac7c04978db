"""The one wait helper: retry a probe, log every try, give up with the last state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

from harness.errors import HarnessError, WaitTimeout

logger = logging.getLogger(__name__)

# A probe says whether the wait is over and what it saw: (True, "worker-2: Ready").
Probe = Callable[[], tuple[bool, str]]


class _NotYet(Exception):
    def __init__(self, seen: str) -> None:
        super().__init__(seen)
        self.seen = seen


def until(
    what: str,
    probe: Probe,
    timeout_s: float = 300,
    interval_s: float = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Call ``probe`` until it says done; return what it saw last.

    An expected error (HarnessError) from the probe counts as "not yet", with
    its first line as the state seen. Raises WaitTimeout after ``timeout_s``.
    """

    def attempt() -> str:
        try:
            done, seen = probe()
        except HarnessError as exc:
            done, seen = False, str(exc).splitlines()[0]
        if not done:
            raise _NotYet(seen)
        return seen

    def log_try(state: RetryCallState) -> None:
        outcome = state.outcome
        seen = outcome.exception() if outcome else None
        logger.info("try %d, %s", state.attempt_number, seen)

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_exception_type(_NotYet),
        before_sleep=log_try,
        sleep=sleep,
        reraise=True,
    )
    try:
        seen = retrying(attempt)
    except _NotYet as exc:
        tries = retrying.statistics.get("attempt_number", 1)
        raise WaitTimeout(what, timeout_s, tries, interval_s, exc.seen) from None
    logger.info("%s: %s", what, seen)
    return seen
