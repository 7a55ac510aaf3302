"""HTTP client for the pull-worker protocol (docs/api.md, "Workers").

Transient trouble (connection refused or reset, timeouts, 5xx, 429) is retried
with capped exponential backoff until a per-call deadline, so a worker rides out
a gateway restart. A 409 on a per-job route means the gateway fenced this
attempt off: ``StaleAttempt`` is raised at once and the report is never retried.
A 401 after registration means the gateway forgot the worker token (a wiped
database): the client registers again once and repeats the call.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel

from nexa.contracts import (
    ClaimedJob,
    ClaimRequest,
    FailReport,
    Heartbeat,
    HeartbeatAck,
    JobType,
    LogLines,
    ProgressReport,
    ResultReport,
    UsageRecord,
    WorkerRegister,
    WorkerRegistered,
)
from nexa.contracts.workers import (
    BenchmarkChallenge,
    BenchmarkCommit,
    BenchmarkProof,
    BenchmarkResult,
    BenchmarkSpotCheck,
)

if TYPE_CHECKING:
    from nexa_store.envelopes import NodeKey, ReportKind

log = logging.getLogger("nexa.worker")
ReportT = TypeVar("ReportT", ResultReport, FailReport, LogLines)

# Default time budgets (seconds) for retrying one call before giving up on it.
REPORT_RETRY_SECONDS = 60.0
# Artifact transfers: a gateway restart mid-upload is worth riding out for longer.
STORE_RETRY_SECONDS = 300.0
_CHUNK = 1 << 20
FINAL_REPORT_RETRY_SECONDS = 300.0


class WorkerClientError(Exception):
    """Base of the worker client's errors."""


class StaleAttempt(WorkerClientError):
    """The gateway refused a report for this attempt (409): the job belongs to someone else now."""


class GatewayUnavailable(WorkerClientError):
    """The gateway stayed unreachable (or kept answering 5xx/429) until the call's deadline."""


class WorkerRejected(WorkerClientError):
    """The gateway refused the call for good (a 4xx that retrying cannot fix)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code


class _Retry(Exception):
    """Internal: this answer is worth another try."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def _error_type_and_message(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return str(err.get("type", "")), str(err.get("message", ""))
    return "", str(body)[:500]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 10.0) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with jitter."""
    raw: float = min(cap, base * (2 ** (attempt - 1)))
    return raw * (0.5 + random.random() / 2)


class WorkerClient:
    """Talks to a gateway's ``/v1/workers`` routes on behalf of one worker process."""

    def __init__(
        self,
        gateway_url: str,
        worker_secret: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self._secret = worker_secret
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(base_url=self.gateway_url, transport=transport, timeout=timeout)
        self._lock = threading.Lock()
        self._registration_request: WorkerRegister | None = None
        self.registered: WorkerRegistered | None = None
        # The node's Ed25519 identity; final reports are signed with it once it registered the key.
        self.node_key: NodeKey | None = None
        # The last log batch number sent per attempt (LogLines.seq).
        self._log_seqs: dict[tuple[str, int], int] = {}
        self._log_lock = threading.Lock()
        # Bumped on every (re-)registration so callers can notice a new token and store config.
        self.generation = 0

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- registration -------------------------------------------------------------------

    def register(self, request: WorkerRegister, *, retry_for: float | None = None) -> WorkerRegistered:
        """Register (retrying transient errors for ``retry_for`` seconds; forever when None)."""
        self._registration_request = request
        if request.public_key is not None and self.node_key is not None:
            request = request.model_copy(update={"key_proof": self.node_key.key_proof()})  # fresh each time
        response = self._send(
            "POST",
            "/v1/workers/register",
            request,
            token=self._secret,
            retry_for=retry_for,
        )
        if response.status_code != 201 and response.status_code != 200:
            raise WorkerRejected(response.status_code, _error_type_and_message(response)[1])
        registered = WorkerRegistered.model_validate(response.json())
        with self._lock:
            self.registered = registered
            self.generation += 1
        log.info("registered as worker %s", registered.worker_id)
        return registered

    def _token(self) -> str:
        with self._lock:
            if self.registered is None:
                raise WorkerClientError("the worker is not registered yet")
            token: str = self.registered.token
            return token

    def _reregister(self, seen_generation: int) -> None:
        with self._lock:
            if self.generation != seen_generation:
                return  # another thread already registered again
            request = self._registration_request
        if request is None:
            raise WorkerClientError("the worker is not registered yet")
        log.warning("the gateway no longer knows this worker's token; registering again")
        self.register(request, retry_for=REPORT_RETRY_SECONDS)

    # -- worker routes ------------------------------------------------------------------

    def worker_heartbeat(self, *, retry_for: float = REPORT_RETRY_SECONDS) -> None:
        """Tell the gateway this worker is alive."""
        self._call("POST", "/v1/workers/heartbeat", None, retry_for=retry_for)

    def claim(
        self, job_types: list[JobType] | None, wait_seconds: float, *, retry_for: float | None = None
    ) -> ClaimedJob | None:
        """Claim one job (long-polling up to ``wait_seconds``); None when nothing fits."""
        body = ClaimRequest(job_types=job_types, wait_seconds=wait_seconds)
        response = self._call(
            "POST",
            "/v1/workers/claim",
            body,
            retry_for=retry_for,
            timeout=self._timeout + wait_seconds,
        )
        if response.status_code == 204:
            return None
        return ClaimedJob.model_validate(response.json())

    # -- benchmark challenges (docs/mesh.md, "Measured throughput") --------------------

    def _worker_path(self) -> str:
        with self._lock:
            if self.registered is None:
                raise WorkerClientError("the worker is not registered yet")
            return f"/v1/workers/{self.registered.worker_id}/benchmark"

    def benchmark_challenge(self, *, retry_for: float = 10.0) -> BenchmarkChallenge:
        """Ask the gateway for a benchmark challenge; its clock starts when it answers. Retried only
        briefly: the worker starts claiming jobs without a benchmark rather than wait for one."""
        response = self._call("POST", self._worker_path(), None, retry_for=retry_for)
        return BenchmarkChallenge.model_validate(response.json())

    def benchmark_commit(
        self, challenge_id: str, commitment: str, *, retry_for: float = 30.0
    ) -> BenchmarkSpotCheck:
        """Commit to the challenge's results; the answer names the rows to prove."""
        body = BenchmarkCommit(commitment=commitment)
        path = f"{self._worker_path()}/{challenge_id}/commit"
        return BenchmarkSpotCheck.model_validate(self._call("POST", path, body, retry_for=retry_for).json())

    def benchmark_proof(
        self, challenge_id: str, proof: BenchmarkProof, *, retry_for: float = 30.0
    ) -> BenchmarkResult:
        """Send the proof; answers with the verified result (``WorkerRejected`` 422 when it failed)."""
        path = f"{self._worker_path()}/{challenge_id}/proof"
        return BenchmarkResult.model_validate(self._call("POST", path, proof, retry_for=retry_for).json())

    # -- per-job routes (fenced by attempt) --------------------------------------------

    def heartbeat(
        self, job_id: str, attempt: int, *, retry_for: float = REPORT_RETRY_SECONDS
    ) -> HeartbeatAck:
        """Extend the job's lease; the answer says whether the user cancelled."""
        response = self._call(
            "POST",
            f"/v1/workers/jobs/{job_id}/heartbeat",
            Heartbeat(attempt=attempt),
            retry_for=retry_for,
            fenced=True,
        )
        return HeartbeatAck.model_validate(response.json())

    def progress(
        self,
        job_id: str,
        attempt: int,
        fraction: float,
        message: str | None,
        *,
        retry_for: float = REPORT_RETRY_SECONDS,
        usage: list[UsageRecord] | None = None,
    ) -> None:
        """Report the job's progress (0..1), an optional message and the attempt's usage so far."""
        if message is not None and len(message) > 2000:
            message = message[:1997] + "..."
        body = ProgressReport(
            attempt=attempt, progress=min(1.0, max(0.0, fraction)), message=message, usage=list(usage or [])
        )
        self._call("POST", f"/v1/workers/jobs/{job_id}/progress", body, retry_for=retry_for, fenced=True)

    def logs(
        self, job_id: str, attempt: int, lines: list[str], *, retry_for: float = REPORT_RETRY_SECONDS
    ) -> None:
        """Append log lines to the job's log: a numbered batch (appended once however often a retry
        sends it), signed with the node's key."""
        with self._log_lock:
            seq = self._log_seqs.get((job_id, attempt), 0) + 1
            self._log_seqs[(job_id, attempt)] = seq
        body = self._signed("logs", job_id, LogLines(attempt=attempt, lines=lines, seq=seq))
        self._call("POST", f"/v1/workers/jobs/{job_id}/logs", body, retry_for=retry_for, fenced=True)

    def complete(
        self, job_id: str, report: ResultReport, *, retry_for: float = FINAL_REPORT_RETRY_SECONDS
    ) -> None:
        """Report success with the result, produced artifacts and usage (signed with the node's key)."""
        signed = self._signed("complete", job_id, report)
        self._log_seqs.pop((job_id, report.attempt), None)  # the attempt's logs were sent before it
        self._call("POST", f"/v1/workers/jobs/{job_id}/complete", signed, retry_for=retry_for, fenced=True)

    def fail(self, job_id: str, report: FailReport, *, retry_for: float = FINAL_REPORT_RETRY_SECONDS) -> None:
        """Report failure with a code, a message and whether another attempt may succeed (signed)."""
        signed = self._signed("fail", job_id, report)
        self._log_seqs.pop((job_id, report.attempt), None)
        self._call("POST", f"/v1/workers/jobs/{job_id}/fail", signed, retry_for=retry_for, fenced=True)

    def _signed(self, kind: ReportKind, job_id: str, report: ReportT) -> ReportT:
        """``report`` with its DSSE envelope, when this node has a key (it registered its public half)."""
        if self.node_key is None or self.registered is None:
            return report
        envelope = self.node_key.sign(kind, job_id, report.attempt, self.registered.worker_id, report)
        return report.model_copy(update={"envelope": envelope})

    # -- the artifact store through the gateway (scoped by the attempt) ----------------

    def store_call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any],
        upload: Path | None = None,
        download: Path | None = None,
        retry_for: float = STORE_RETRY_SECONDS,
    ) -> httpx.Response:
        """One store request; the caller reads the status (404 and 409 mean things to the store)."""
        generation = self.generation
        for first in (True, False):
            response = self._send(
                method,
                path,
                None,
                token=self._token(),
                retry_for=retry_for,
                params=params,
                upload=upload,
                download=download,
            )
            if response.status_code != 401 or not first:
                break
            self._reregister(generation)
        return response

    # -- plumbing ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | None,
        *,
        retry_for: float | None,
        fenced: bool = False,
        timeout: float | None = None,
    ) -> httpx.Response:
        generation = self.generation
        response = self._send(method, path, body, token=self._token(), retry_for=retry_for, timeout=timeout)
        if response.status_code == 401:
            self._reregister(generation)
            response = self._send(
                method, path, body, token=self._token(), retry_for=retry_for, timeout=timeout
            )
        if response.status_code == 409 and fenced:
            error_type, message = _error_type_and_message(response)
            raise StaleAttempt(message or error_type or "stale attempt")
        if response.status_code == 404 and fenced:
            # The job is gone for this worker (deleted, or never ours): nothing left to report to.
            raise StaleAttempt(_error_type_and_message(response)[1] or "job not found")
        if response.status_code >= 400:
            raise WorkerRejected(response.status_code, _error_type_and_message(response)[1])
        return response

    def _send(
        self,
        method: str,
        path: str,
        body: BaseModel | None,
        *,
        token: str,
        retry_for: float | None,
        timeout: float | None = None,
        params: dict[str, Any] | None = None,
        upload: Path | None = None,
        download: Path | None = None,
    ) -> httpx.Response:
        """Send one request, retrying transient failures until ``retry_for`` runs out.

        ``upload`` sends a file as the body (re-read on each try); ``download``
        streams a 200 answer's body into a file (rewritten on each try).
        """
        deadline = None if retry_for is None else self._clock() + retry_for
        payload = None if body is None else body.model_dump(mode="json", exclude_none=False)
        tries = 0
        while True:
            tries += 1
            try:
                request = self._http.build_request(
                    method,
                    path,
                    json=payload,
                    params=params,
                    content=None if upload is None else _file_chunks(upload),
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=timeout if timeout is not None else self._timeout,
                )
                response = self._http.send(request, stream=download is not None)
                if download is not None:
                    try:
                        if response.status_code == 200:
                            with download.open("wb") as out:
                                for chunk in response.iter_bytes(_CHUNK):
                                    out.write(chunk)
                        else:
                            response.read()
                    finally:
                        response.close()
                if response.status_code >= 500:
                    raise _Retry(f"gateway answered {response.status_code}")
                if response.status_code == 429:
                    retry_after = response.headers.get("Retry-After")
                    delay = (
                        float(retry_after)
                        if retry_after and retry_after.replace(".", "", 1).isdigit()
                        else None
                    )
                    raise _Retry("rate limited", delay)
                return response
            except (httpx.TransportError, _Retry) as exc:
                reason = exc.reason if isinstance(exc, _Retry) else f"{type(exc).__name__}: {exc}"
                delay = (
                    exc.delay if isinstance(exc, _Retry) and exc.delay is not None else backoff_delay(tries)
                )
                if deadline is not None and self._clock() + delay > deadline:
                    raise GatewayUnavailable(f"{method} {path}: {reason}") from exc
                if tries == 1 or tries % 10 == 0:
                    log.warning("%s %s failed (%s); retrying", method, path, reason)
                self._sleep(delay)


class AttemptClient(WorkerClient):
    """An engine pod's gateway client: store calls and run records under its attempt token, nothing else.

    The token (``nexa.attempttokens``) was minted by the operator for this one
    attempt; there is no registration to renew, so a refused token ends the attempt.
    """

    def __init__(self, gateway_url: str, attempt_token: str, **options: Any) -> None:
        super().__init__(gateway_url, "", **options)
        self._attempt_token = attempt_token

    def _token(self) -> str:
        return self._attempt_token

    def _reregister(self, seen_generation: int) -> None:
        raise WorkerClientError(
            "the gateway refused this attempt's token (expired, or not the current attempt)"
        )

    def put_run_record(
        self, job_id: str, attempt: int, name: str, record: bytes, *, retry_for: float = STORE_RETRY_SECONDS
    ) -> None:
        """Leave ``result.json`` or ``progress.json`` where the operator reads it, through the gateway."""
        handle, spooled = tempfile.mkstemp(prefix="run-record-", suffix=".json")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(record)
            response = self._send(
                "PUT",
                f"/v1/workers/jobs/{job_id}/store/runs/{name}",
                None,
                token=self._token(),
                retry_for=retry_for,
                params={"attempt": attempt},
                upload=Path(spooled),
            )
        finally:
            os.unlink(spooled)
        if response.status_code != 204:
            error_type, message = _error_type_and_message(response)
            raise WorkerClientError(
                f"the gateway refused the {name}: {message or error_type or response.status_code}"
            )
