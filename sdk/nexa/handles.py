"""What the clients hand back: job handles and log lines.

A handle wraps the latest ``nexa.contracts.Job`` the gateway returned and the
client that fetched it, so ``job.refresh()``, ``job.wait()`` and
``job.cancel()`` work without passing the client around. Fields read as
attributes (``job.status``) or, as in the SPEC examples, as keys of the JSON
form (``job["job_id"]``). A handle *is* that JSON form, a ``dict`` kept in step
with each refresh, so ``dict(job)``, ``job.get("result")`` and
``json.dumps(job)`` work as the SPEC's ``-> dict`` promises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nexa.contracts.jobs import Job, JobError, JobEvent, JobState, JobType
from nexa.contracts.results import JobResult, result_for

if TYPE_CHECKING:
    from nexa.async_client import AsyncNexaClient
    from nexa.client import NexaClient

__all__ = ["AsyncJobHandle", "BaseJobHandle", "JobHandle", "LogLine"]


class LogLine(BaseModel):
    """One line a job printed: its sequence number, the attempt that printed it, when, and the text."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int
    attempt: int
    at: datetime
    line: str

    def __str__(self) -> str:
        return self.line


class BaseJobHandle(dict[str, Any]):
    """Read access to a job's last known state (shared by the sync and async handles).

    The dict's items are the job's JSON form as last fetched; changing them changes
    nothing on the server (and the next refresh replaces them).
    """

    __slots__ = ("_model",)

    def __init__(self, model: Job) -> None:
        super().__init__(model.model_dump(mode="json"))
        self._model = model

    def _set_model(self, model: Job) -> None:
        self._model = model
        self.clear()
        self.update(model.model_dump(mode="json"))

    @property
    def model(self) -> Job:
        """The ``Job`` as last fetched."""
        return self._model

    @property
    def job_id(self) -> str:
        return self._model.job_id

    @property
    def job_type(self) -> JobType:
        return self._model.job_type

    @property
    def status(self) -> JobState:
        return self._model.status

    @property
    def progress(self) -> float:
        return self._model.progress

    @property
    def result(self) -> dict[str, Any] | None:
        return self._model.result

    @property
    def typed_result(self) -> JobResult | None:
        """The result as its job type's model (``AuditResult``, ``TrainResult`` …), or None before it ends."""
        result = self._model.result
        return None if result is None else result_for(self._model.job_type, result)

    @property
    def error(self) -> JobError | None:
        return self._model.error

    @property
    def events(self) -> list[JobEvent]:
        return self._model.events

    @property
    def done(self) -> bool:
        """True once the job is completed, failed or cancelled (as of the last fetch)."""
        return self._model.status.terminal

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data, exactly as the API returns it (a plain copy)."""
        return self._model.model_dump(mode="json")

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not defined on the handle: expose the rest of Job's fields.
        if name.startswith("_") or name not in type(self._model).model_fields:
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        return getattr(self._model, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(type(self._model).model_fields))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseJobHandle):
            return self._model == other._model
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self) -> Any:
        # Pickles (and copies) as the plain dict: the client it came from does not travel.
        return (dict, (dict(self),))

    __hash__ = None  # a handle's state changes on refresh()

    def __repr__(self) -> str:
        job = self._model
        parts = [job.job_id, job.job_type.value, job.status.value]
        if job.status is JobState.running:
            parts.append(f"{job.progress:.0%}")
        if job.error is not None:
            parts.append(f"error={job.error.code}")
        return f"<{type(self).__name__} {' '.join(parts)}>"


class JobHandle(BaseJobHandle):
    """A job fetched by a ``NexaClient``; its methods call the gateway."""

    __slots__ = ("_client",)

    def __init__(self, model: Job, client: NexaClient) -> None:
        super().__init__(model)
        self._client = client

    def _update(self, other: BaseJobHandle) -> JobHandle:
        self._set_model(other.model)
        return self

    def refresh(self) -> JobHandle:
        """Fetch the job's current state into this handle and return it."""
        return self._update(self._client.status(self.job_id))

    def wait(
        self,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[JobHandle], None] | None = None,
        raise_on_failure: bool = True,
    ) -> JobHandle:
        """Block until the job is terminal; see ``NexaClient.wait``. Updates this handle."""
        final = self._client.wait(
            self.job_id,
            timeout=timeout,
            poll_interval=poll_interval,
            on_update=on_update,
            raise_on_failure=raise_on_failure,
        )
        return self._update(final)

    def cancel(self) -> JobHandle:
        """Cancel the job and return this handle, updated."""
        return self._update(self._client.cancel(self.job_id))

    def logs(self, *, follow: bool = True, last_event_id: int | None = None) -> Iterator[LogLine]:
        """The job's log lines; see ``NexaClient.logs``."""
        return self._client.logs(self.job_id, follow=follow, last_event_id=last_event_id)

    def list_events(self) -> list[JobEvent]:
        """The job's full timeline, fetched now."""
        return self._client.events(self.job_id)


class AsyncJobHandle(BaseJobHandle):
    """A job fetched by an ``AsyncNexaClient``; its methods are coroutines."""

    __slots__ = ("_client",)

    def __init__(self, model: Job, client: AsyncNexaClient) -> None:
        super().__init__(model)
        self._client = client

    def _update(self, other: BaseJobHandle) -> AsyncJobHandle:
        self._set_model(other.model)
        return self

    async def refresh(self) -> AsyncJobHandle:
        """Fetch the job's current state into this handle and return it."""
        return self._update(await self._client.status(self.job_id))

    async def wait(
        self,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[AsyncJobHandle], None] | None = None,
        raise_on_failure: bool = True,
    ) -> AsyncJobHandle:
        """Wait until the job is terminal; see ``AsyncNexaClient.wait``. Updates this handle."""
        final = await self._client.wait(
            self.job_id,
            timeout=timeout,
            poll_interval=poll_interval,
            on_update=on_update,
            raise_on_failure=raise_on_failure,
        )
        return self._update(final)

    async def cancel(self) -> AsyncJobHandle:
        """Cancel the job and return this handle, updated."""
        return self._update(await self._client.cancel(self.job_id))

    def logs(self, *, follow: bool = True, last_event_id: int | None = None) -> AsyncIterator[LogLine]:
        """The job's log lines; see ``AsyncNexaClient.logs``."""
        return self._client.logs(self.job_id, follow=follow, last_event_id=last_event_id)

    async def list_events(self) -> list[JobEvent]:
        """The job's full timeline, fetched now."""
        return await self._client.events(self.job_id)
