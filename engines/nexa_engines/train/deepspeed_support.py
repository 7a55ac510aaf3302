"""DeepSpeed ZeRO on CUDA: the engine wrapper and its config, from the train spec.

Only used when a CUDA device is present and ``deepspeed_stage`` > 0; on CPU the
train engine logs that this path is skipped and trains with plain PyTorch.
"""

from __future__ import annotations

from typing import Any


def zero_config(stage: int, batch_size: int, grad_accum: int, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config for ZeRO ``stage`` (offload off; contiguous gradients and overlap on)."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
    }


def wrap(model: Any, optimizer: Any, scheduler: Any, config: dict[str, Any]) -> Any:
    """``deepspeed.initialize`` on the model, optimizer and scheduler; returns the DeepSpeed engine."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    return engine


def full_state_dict(engine: Any) -> dict[str, Any]:
    """The model's weights gathered on rank 0 (ZeRO-3 shards them across ranks)."""
    if engine.zero_optimization_stage() == 3:
        state: dict[str, Any] = engine._zero3_consolidated_16bit_state_dict()
        return state
    module_state: dict[str, Any] = engine.module.state_dict()
    return module_state
