"""A worker thread: runs what is due in the outbox until stopped — the one `kartoteka
serve` starts in its process, and what `kartoteka worker` runs on its own.

It wakes when a write of this process made an event (after that write commits, the event
is found) and otherwise looks every `poll` seconds, which is how it sees events written
by other processes and retries coming due. An error reaching the database is logged and
tried again at the next look: the server keeps serving.
"""

from __future__ import annotations

import logging
import threading

from engine.automations.worker import Automations

log = logging.getLogger("kartoteka.automations")


class Runner:
    def __init__(self, automations: Automations, *, poll: float = 1.0):
        self.automations = automations
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="kartoteka-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end after the event in hand, and wait for it."""
        self._stop.set()
        self.automations.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        wake = self.automations.wake
        while not self._stop.is_set():
            wake.clear()
            try:
                while not self._stop.is_set() and self.automations.run_pending(limit=50):
                    pass
            except Exception:
                log.exception("the automation worker could not run; trying again")
            wake.wait(self.poll)
