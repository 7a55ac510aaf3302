"""Nexa Forge compatibility: the Forge overview's ``NexaForgeClient``, over Nexa's own client.

Code written against the Forge SDK runs unchanged::

    from nexa_forge import NexaForgeClient

    client = NexaForgeClient(api_key="nexa_...")
    job = client.generate(domain="biology", num_samples=100)
    status = client.get_job(job["job_id"])

Each method maps Forge's keyword names onto Nexa's contracts and returns the
same job handle ``nexa.NexaClient`` does (a dict of the job's JSON form, with
``.wait()``, ``.logs()`` and friends). Every other keyword is a field of the
job type's spec (``AuditSpec``, ``TrainSpec``, …), so nothing Nexa offers is out
of reach. The mapping, and where Forge's words have no Nexa meaning, is in
``docs/api.md`` ("Forge compatibility").
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from nexa.client import NexaClient
from nexa.errors import NexaError
from nexa.handles import JobHandle

__all__ = ["NexaForgeClient", "NexaError"]


def _one(name: str, forge: str | None, nexa: str | None, nexa_name: str) -> str:
    """The value given under Forge's name or Nexa's, refusing both or neither."""
    if forge is not None and nexa is not None and forge != nexa:
        raise TypeError(f"pass {name} or {nexa_name}, not both")
    value = forge if forge is not None else nexa
    if value is None:
        raise TypeError(f"missing required argument: {name}")
    return value


class NexaForgeClient:
    """The Forge SDK's client. ``api_key`` / ``base_url`` default like ``NexaClient``'s
    (``NEXA_API_KEY`` / ``NEXA_BASE_URL``, then the config ``nexa up`` wrote)."""

    def __init__(
        self, api_key: str | None = None, base_url: str | None = None, **client_options: Any
    ) -> None:
        self._client = NexaClient(api_key=api_key, base_url=base_url, **client_options)

    @property
    def client(self) -> NexaClient:
        """The ``nexa.NexaClient`` underneath, for everything Forge did not name."""
        return self._client

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> NexaForgeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- data operations

    def generate(
        self, domain: str, num_samples: int = 100, *, teacher_model: str | None = None, **options: Any
    ) -> JobHandle:
        """Synthetic data for ``domain``; the platform's default teacher unless ``teacher_model``."""
        return self._client.generate(domain, num_samples, teacher=teacher_model, **options)

    def audit(self, dataset_uri: str, **options: Any) -> JobHandle:
        """Score a dataset's quality."""
        return self._client.audit(dataset_uri, **options)

    # ---- model operations

    def distill(
        self,
        teacher_model: str | None = None,
        student_model: str | None = None,
        dataset_uri: str | None = None,
        *,
        dataset_id: str | None = None,
        **options: Any,
    ) -> JobHandle:
        """SFT data from ``dataset_uri``'s prompts answered by ``teacher_model``.

        ``student_model`` is checked and recorded with the data (Nexa distills data;
        training the student is a ``train`` job on the result).
        """
        dataset = _one("dataset_uri", dataset_uri, dataset_id, "dataset_id")
        if student_model is not None:
            options["student_model"] = student_model
        return self._client.distill(dataset, teacher=teacher_model, **options)

    def train(
        self,
        model_id: str | None = None,
        dataset_uri: str | None = None,
        epochs: int = 3,
        *,
        dataset_id: str | None = None,
        **options: Any,
    ) -> JobHandle:
        """Fine-tune ``model_id`` (a catalog name, Hugging Face id, path or ``ckpt_…``) on a dataset."""
        dataset = _one("dataset_uri", dataset_uri, dataset_id, "dataset_id")
        model = options.pop("model", None)
        return self._client.train(
            dataset, model=model_id if model_id is not None else model, epochs=epochs, **options
        )

    def evaluate(
        self,
        model_id: str | None = None,
        benchmark: str | None = None,
        *,
        checkpoint_id: str | None = None,
        **options: Any,
    ) -> JobHandle:
        """Evaluate a checkpoint (``model_id`` is its ``ckpt_…`` id)."""
        checkpoint = _one("model_id", model_id, checkpoint_id, "checkpoint_id")
        if benchmark is not None:
            options["benchmark"] = benchmark
        return self._client.evaluate(checkpoint, **options)

    def deploy(
        self,
        model_id: str | None = None,
        region: str | None = None,
        *,
        checkpoint_id: str | None = None,
        **options: Any,
    ) -> JobHandle:
        """Serve a checkpoint (``model_id`` is its ``ckpt_…`` id).

        Nexa places work by resources and tier, not region: ``region`` is kept as the
        job's ``region`` label, so it can be filtered on.
        """
        checkpoint = _one("model_id", model_id, checkpoint_id, "checkpoint_id")
        if region is not None:
            options["labels"] = {**options.get("labels", {}), "region": region}
        return self._client.deploy(checkpoint, **options)

    # ---- jobs

    def get_job(self, job_id: str) -> JobHandle:
        """A job's status."""
        return self._client.status(job_id)

    def list_jobs(self, **filters: Any) -> list[JobHandle]:
        """The tenant's latest jobs, newest first (``NexaClient.list_jobs`` filters as keywords; 50 unless
        ``limit``)."""
        filters.setdefault("limit", 50)
        return list(self._client.list_jobs(**filters))

    def cancel_job(self, job_id: str) -> JobHandle:
        return self._client.cancel(job_id)
