"""The train engine: causal-LM SFT with packing, LoRA, checkpoints and resume."""

from nexa_engines.train.engine import run

__all__ = ["run"]
