"""Read an attempt's result record from the artifact store (local directory or S3)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from nexa.contracts.nexajob import run_progress_key, run_result_key
from nexa.storesettings import S3Location, local_artifact_root
from nexa_operator.reconcile import ResultLookup


class ResultReader:
    """Finds ``runs/<job_id>/attempt-<n>/result.json`` under the store root the engines write to."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        # The same variables, read by the same code, as the engines that write the records.
        self.location = S3Location.from_env(env)
        self.root = local_artifact_root(env)

    def read(self, job_id: str, attempt: int) -> ResultLookup:
        """The record's result; ``missing`` when there is none, ``unavailable`` when the store failed."""
        key = run_result_key(job_id, attempt)
        try:
            raw = self._read_s3(key) if self.location else self._read_local(key)
        except OSError as exc:
            return ResultLookup("unavailable", detail=f"cannot read {key}: {exc}")
        if raw is None:
            return ResultLookup("missing", detail=f"no {key} in the artifact store")
        try:
            doc: Any = json.loads(raw)
        except ValueError:
            return ResultLookup("missing", detail=f"{key} is not JSON")
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("result"), dict)
            or doc.get("attempt") != attempt
        ):
            return ResultLookup("missing", detail=f"{key} is not a result record of attempt {attempt}")
        return ResultLookup("found", result=doc["result"])

    def read_progress(self, job_id: str, attempt: int) -> tuple[float, str | None] | None:
        """The attempt's latest ``(fraction, message)``; None when it reported none (or the store failed)."""
        key = run_progress_key(job_id, attempt)
        try:
            raw = self._read_s3(key) if self.location else self._read_local(key)
            doc: Any = json.loads(raw) if raw is not None else None
        except (OSError, ValueError):
            return None  # progress is best effort; the next read tries again
        if not isinstance(doc, dict) or doc.get("attempt") != attempt:
            return None
        try:
            fraction = min(1.0, max(0.0, float(doc.get("fraction", 0.0))))
        except (TypeError, ValueError):
            return None
        message = doc.get("message")
        return fraction, str(message)[:256] if message else None

    def _read_local(self, key: str) -> bytes | None:
        path = self.root / key
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _read_s3(self, key: str) -> bytes | None:
        from minio.error import S3Error

        assert self.location is not None
        client = self.location.client()
        name = self.location.object_name(key)
        try:
            response = client.get_object(self.location.bucket, name)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise OSError(str(exc)) from exc
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()
