"""The deploy engine: a detached serving process per deployment (standalone mode)."""

from nexa_engines.deploy.engine import run

__all__ = ["run"]
