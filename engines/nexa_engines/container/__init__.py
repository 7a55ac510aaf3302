"""The container engine: run a job's image with podman or docker on a standalone worker."""

from nexa_engines.container.engine import run
from nexa_engines.container.runtime import unavailable

__all__ = ["run", "unavailable"]
