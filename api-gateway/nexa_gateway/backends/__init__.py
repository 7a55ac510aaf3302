"""Job backends: where jobs live. SQL (standalone) now; Kubernetes NexaJobs in cluster mode."""

from nexa_gateway.backends.base import JobBackend
from nexa_gateway.backends.sql import SqlJobBackend

__all__ = ["JobBackend", "SqlJobBackend"]
