"""The distill engine: teacher answers to a prompt dataset, as an SFT dataset."""

from nexa_engines.distill.engine import run

__all__ = ["run"]
