"""Every exception the SDK raises, in one tree.

::

    NexaError                         anything the SDK raises on purpose
    ├── ConfigError                   no API key found, unreadable config file
    ├── APIConnectionError            the gateway could not be reached (after retries)
    │   └── APITimeoutError           ... because a timeout ran out
    ├── APIStatusError                the gateway answered 4xx/5xx (after retries)
    │   ├── BadRequestError           400 (malformed JSON, bad cursor, unreadable upload)
    │   ├── AuthenticationError       401 (unknown, revoked or expired key)
    │   ├── PaymentRequiredError      402 (the job would pass a budget: ``.message`` names the numbers)
    │   ├── PermissionDeniedError     403
    │   ├── NotFoundError             404 (also another tenant's ids)
    │   ├── ConflictError             409 (idempotency key reused with another body, ...)
    │   ├── UnprocessableEntityError  422, alias ValidationError (``.field`` names the culprit)
    │   ├── RateLimitError            429 (``.retry_after`` in seconds)
    │   └── InternalServerError       5xx
    ├── JobError                      a job ended badly while you waited for it
    │   ├── JobFailedError            status ``failed`` (``.job.error`` says why)
    │   └── JobCancelledError         status ``cancelled``
    ├── PipelineFileError             a pipeline file or spec is unreadable or invalid (also a ValueError)
    └── WaitTimeoutError              ``wait(timeout=...)`` ran out first (the job goes on)
        └── PipelineWaitTimeoutError  ``wait_pipeline(timeout=...)`` ran out (``.pipeline``, no ``.job``)

``APIStatusError`` carries what the gateway said: ``status_code``, ``error_type``
(stable, e.g. ``validation_error``), ``message``, ``field``, ``errors``, the raw
``body`` and the ``request_id`` when the gateway sent one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nexa.contracts.pipelines import Pipeline
    from nexa.handles import BaseJobHandle

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "InternalServerError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "NexaError",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "PipelineFileError",
    "PipelineWaitTimeoutError",
    "RateLimitError",
    "UnprocessableEntityError",
    "ValidationError",
    "WaitTimeoutError",
]


class NexaError(Exception):
    """Base of every exception the SDK raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(NexaError):
    """The client could not be configured: no API key, or an unreadable config file."""


class APIConnectionError(NexaError):
    """The gateway could not be reached, or the connection broke, after every retry."""


class APITimeoutError(APIConnectionError):
    """A connect, read, write or pool timeout ran out, after every retry."""


class APIStatusError(NexaError):
    """The gateway answered with a 4xx or 5xx status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str,
        field: str | None = None,
        errors: list[dict[str, str]] | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.field = field
        self.errors = errors or []
        self.body = body
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.status_code} {self.error_type}: {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


class BadRequestError(APIStatusError):
    """400: the request could not be read (malformed JSON, bad cursor, unreadable upload)."""


class AuthenticationError(APIStatusError):
    """401: the API key is unknown, revoked or expired, or the wrong kind of credential."""


class PermissionDeniedError(APIStatusError):
    """403: the credential is valid but may not do this."""


class PaymentRequiredError(APIStatusError):
    """402: the job's estimate passes its ``max_cost_cents`` or the tenant's remaining monthly budget."""


class NotFoundError(APIStatusError):
    """404: no such object for this tenant."""


class ConflictError(APIStatusError):
    """409: e.g. an idempotency key reused with another body, or cancelling a finished job."""


class UnprocessableEntityError(APIStatusError):
    """422: the body is well-formed but invalid; ``field`` names the offending field."""


ValidationError = UnprocessableEntityError


class RateLimitError(APIStatusError):
    """429: past the per-key rate limit; ``retry_after`` says how many seconds to wait."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InternalServerError(APIStatusError):
    """5xx: the gateway or something behind it failed."""


class JobError(NexaError):
    """A job reached a terminal state other than ``completed``; ``job`` is its handle."""

    def __init__(self, message: str, *, job: BaseJobHandle) -> None:
        super().__init__(message)
        self.job = job


class JobFailedError(JobError):
    """The job failed; ``job.error`` holds the code and message."""


class JobCancelledError(JobError):
    """The job was cancelled."""


class WaitTimeoutError(NexaError):
    """Waiting for a job ran out of time; the job itself keeps running. ``job`` is its last state."""

    def __init__(self, message: str, *, job: BaseJobHandle) -> None:
        super().__init__(message)
        self.job = job


class PipelineWaitTimeoutError(WaitTimeoutError):
    """Waiting for a pipeline ran out of time; the pipeline keeps going. ``pipeline`` is its last state.

    A pipeline has no single job, so this error has no ``job``: read ``pipeline.steps`` instead.
    """

    def __init__(self, message: str, *, pipeline: Pipeline) -> None:
        NexaError.__init__(self, message)
        self.pipeline = pipeline


class PipelineFileError(NexaError, ValueError):
    """A pipeline file (or spec) could not be read or is not a valid pipeline.

    ``source`` names the file (or ``"pipeline spec"``); ``problems`` lists every problem found, each
    naming its field, and ``message`` joins them.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class_for(status_code: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status (``APIStatusError`` when none is more specific)."""
    if status_code >= 500:
        return InternalServerError
    return STATUS_ERRORS.get(status_code, APIStatusError)
