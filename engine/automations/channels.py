"""What the delivery channels (webhooks, e-mail) tell the worker when a delivery fails.

One exception for every channel, so the worker has one rule: retry a `retryable` failure
with backoff, put any other one on the dead-letter list at once.

    KartotekaError
    └── DeliveryFailed      a webhook or an e-mail could not be delivered (.retryable, .status)
        └── TargetRefused   (engine.automations.webhook) the URL may not be called at all
"""

from __future__ import annotations

from engine.errors import KartotekaError


class DeliveryFailed(KartotekaError):
    """A delivery did not go through.

    `retryable` says whether trying again later may succeed: a timeout, a refused or
    dropped connection, an HTTP 5xx, 408 or 429, an SMTP 4xx reply. Anything else — an
    HTTP 3xx (redirects are never followed) or other 4xx, an SMTP 5xx — fails the same way
    every time. `status` is the HTTP status or SMTP reply code when there was one;
    `retry_after` the seconds a receiver asked to wait (HTTP Retry-After), if it said.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
