"""The evaluate engine: held-out metrics, judge, comparison with the base model, and a report."""

from nexa_engines.evaluate.engine import run

__all__ = ["run"]
