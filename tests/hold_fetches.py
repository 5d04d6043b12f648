"""A pixels gate for the emulator (``EEEmulator.pixels_gate``) that makes tests about timing
independent of the machine's load: the later half of the places' pixel requests wait for a
condition instead of racing it.

- Streaming tests: the later places wait until the run has written something for an earlier
  place. A run that writes everything in a pass after the last batch never does, so after
  ``timeout_s`` the requests go on and the test's overlap assertion fails, as it should.
- The killed-driver test: the later places wait until the driver has been killed, so it is
  killed with some places logged and the rest not fetched yet, however slowly the model
  actor started."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def hold_later_places(
    first_held: int, written: Callable[[], bool], timeout_s: float = 120.0
) -> Callable[[int], None]:
    """Pixel requests ``first_held`` and later wait for ``written()`` (polled), all of them
    together at most ``timeout_s`` from the first hold."""
    deadline: list[float] = []

    def gate(k: int) -> None:
        if k < first_held:
            return
        if not deadline:
            deadline.append(time.monotonic() + timeout_s)
        while not written():
            if time.monotonic() > deadline[0]:
                log.warning("pixels gate: nothing written after %.0f s; going on", timeout_s)
                return
            time.sleep(0.05)

    return gate
