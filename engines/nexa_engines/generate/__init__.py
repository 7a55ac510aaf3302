"""The generate engine: synthetic instruction data through the teacher path."""

from nexa_engines.generate.engine import run

__all__ = ["run"]
