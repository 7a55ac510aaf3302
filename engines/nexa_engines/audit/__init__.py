"""The audit engine: heuristics, exact and near duplicates, optional judge, scores and a report."""

from nexa_engines.audit.engine import run

__all__ = ["run"]
