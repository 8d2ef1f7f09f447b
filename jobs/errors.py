"""What can go wrong in a job, split by what to do about it: retry later, or stop."""

from __future__ import annotations


class JobError(Exception):
    """A job could not finish."""


class TransientError(JobError):
    """A failure that may pass: rate limits, 5xx, timeouts, connection errors, non-JSON answers."""

    def __init__(self, message: str, *, retry_after: float | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status_code = status_code


class PermanentError(JobError):
    """A failure a retry will not fix: the message is gone, the grant needs re-authentication, the data is bad."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Throttled(JobError):
    """The grant's share of Nylas calls is used up for now; the job is deferred without counting a try."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"throttled for {wait:.3f}s")
        self.wait = wait


class GrantPaused(JobError):
    """The grant may not be called (expired, refused credentials, deleted): the work is parked."""
