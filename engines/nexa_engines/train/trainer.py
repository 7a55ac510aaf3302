"""The SFT training loop: batches, optimizer, schedule, metrics, periodic checkpoints, resume.

``Trainer`` knows nothing about jobs: the engine gives it callbacks for metrics,
checkpoints and cancellation, which keeps the loop usable by the packing
benchmark as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nexa_engines.models.runtime import Device, rng_state, set_rng_state
from nexa_engines.train.data import Batch, Example, pack_rows, packed_batches, padded_batches


@dataclass
class LoopConfig:
    """Hyperparameters the loop needs (a subset of ``TrainHyperparameters`` plus scheduling)."""

    learning_rate: float
    batch_size: int
    grad_accum: int
    max_seq_len: int
    warmup_ratio: float
    weight_decay: float
    packing: bool
    seed: int
    epochs: int
    checkpoint_every: int
    log_every: int = 0  # 0: about 50 lines per run
    max_steps: int | None = None


@dataclass
class Units:
    """What one epoch iterates over: packed rows or single examples."""

    packed: list[dict[str, np.ndarray]] | None
    examples: list[Example]
    pad_id: int

    def __len__(self) -> int:
        return len(self.packed) if self.packed is not None else len(self.examples)

    def batches(self, order: list[int], batch_size: int) -> Iterator[Batch]:
        if self.packed is not None:
            return packed_batches(self.packed, order, batch_size)
        return padded_batches(self.examples, order, batch_size, self.pad_id)


def make_units(examples: list[Example], packing: bool, capacity: int, pad_id: int) -> Units:
    """Pack ``examples`` into rows of ``capacity`` tokens, or keep them one per row."""
    return Units(pack_rows(examples, capacity, pad_id) if packing else None, examples, pad_id)


@dataclass
class LoopState:
    """Where training stands; saved in intermediate checkpoints."""

    step: int = 0
    tokens: int = 0
    slots: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warmup, then cosine decay to 10% of the peak."""
    warmup = max(0, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trainer:
    """Runs optimizer steps over ``units`` for ``config.epochs`` epochs."""

    def __init__(self, model: Any, units: Units, config: LoopConfig, device: Device) -> None:
        self.model = model
        self.units = units
        self.config = config
        self.device = device
        self.micro_per_epoch = math.ceil(len(units) / config.batch_size)
        self.steps_per_epoch = max(1, math.ceil(self.micro_per_epoch / config.grad_accum))
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_steps, config.warmup_ratio)
        )
        self.state = LoopState()
        self.engine: Any = None  # a DeepSpeed engine when enabled

    def use_deepspeed(self, engine: Any) -> None:
        """Step through a DeepSpeed engine instead of the plain optimizer."""
        self.engine = engine

    # ---- resume

    def trainer_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this step left off."""
        return {
            "step": self.state.step,
            "tokens": self.state.tokens,
            "slots": self.state.slots,
            "elapsed_s": self.state.elapsed_s,
            "history": self.state.history,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def load_trainer_state(self, saved: dict[str, Any]) -> None:
        """Continue from a ``trainer_state`` dict."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        self.state = LoopState(
            step=int(saved["step"]),
            tokens=int(saved["tokens"]),
            slots=int(saved["slots"]),
            elapsed_s=float(saved["elapsed_s"]),
            history=list(saved["history"]),
        )

    # ---- the loop

    def _order(self, epoch: int) -> list[int]:
        # The order depends only on the seed and the epoch, so a resumed run sees the same batches.
        order: list[int] = (
            np.random.default_rng(self.config.seed + epoch).permutation(len(self.units)).tolist()
        )
        return order

    def _micro_batches(self, step: int) -> list[Batch]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        bs = self.config.batch_size
        first = within * self.config.grad_accum
        chosen = order[first * bs : (first + self.config.grad_accum) * bs]
        return list(self.units.batches(chosen, bs))

    def _forward(self, batch: Batch) -> torch.Tensor:
        inputs = batch.to(self.device.torch_device).model_inputs()
        target = self.engine if self.engine is not None else self.model
        if self.device.is_cuda and self.device.dtype == torch.bfloat16 and self.engine is None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return target(**inputs).loss  # type: ignore[no-any-return]
        return target(**inputs).loss  # type: ignore[no-any-return]

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step (``grad_accum`` micro batches); returns its metrics."""
        self.model.train()
        micro = self._micro_batches(step)
        real = sum(b.real_tokens for b in micro)
        slots = sum(b.slots for b in micro)
        weights = [sum(int((b.labels[:, 1:] != -100).sum()) for b in [m]) for m in micro]
        total_weight = max(1, sum(weights))
        started = time.perf_counter()
        loss_sum = 0.0
        for batch, weight in zip(micro, weights, strict=True):
            loss = self._forward(batch)
            # Weight micro batches by their label tokens so accumulation equals one big batch.
            scaled = loss * (weight / total_weight)
            if self.engine is not None:
                self.engine.backward(scaled)
                self.engine.step()
            else:
                scaled.backward()  # type: ignore[no-untyped-call]
            loss_sum += float(loss.detach()) * weight / total_weight
        if self.engine is None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        self.state.step = step + 1
        self.state.tokens += real
        self.state.slots += slots
        self.state.elapsed_s += seconds
        return {
            "step": step + 1,
            "epoch": step // self.steps_per_epoch + 1,
            "loss": round(loss_sum, 6),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens": real,
            "padding_waste": round(1 - real / slots, 6) if slots else 0.0,
            "tokens_per_s": round(real / seconds, 1) if seconds > 0 else None,
            "step_s": round(seconds, 4),
        }

    def run(
        self,
        *,
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
        on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
        check_cancelled: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Train from ``state.step`` to the end; returns the summary metrics."""
        log_every = self.config.log_every or max(1, self.total_steps // 50)
        last: dict[str, Any] = {}
        for step in range(self.state.step, self.total_steps):
            if check_cancelled is not None:
                check_cancelled()
            last = self.train_step(step)
            done = step + 1
            if done % log_every == 0 or done == self.total_steps or done == 1:
                last["elapsed_s"] = round(self.state.elapsed_s, 3)
                self.state.history.append(last)
                if on_metrics is not None:
                    on_metrics(last)
            if (
                on_checkpoint is not None
                and done % self.config.checkpoint_every == 0
                and done < self.total_steps
            ):
                on_checkpoint(done, last)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Totals over the whole run (resumed parts included)."""
        losses = [h["loss"] for h in self.state.history]
        return {
            "steps": self.state.step,
            "final_loss": losses[-1] if losses else None,
            "tokens": self.state.tokens,
            "padding_waste": round(1 - self.state.tokens / self.state.slots, 6) if self.state.slots else 0.0,
            "tokens_per_s": round(self.state.tokens / self.state.elapsed_s, 1)
            if self.state.elapsed_s
            else None,
            "train_seconds": round(self.state.elapsed_s, 3),
        }


def evaluate_loss(model: Any, units: Units, batch_size: int, device: Device) -> float:
    """Mean loss over ``units`` (label-token weighted), without gradients."""
    model.eval()
    total, weight = 0.0, 0
    with torch.no_grad():
        for batch in units.batches(list(range(len(units))), batch_size):
            count = int((batch.labels[:, 1:] != -100).sum())
            loss = model(**batch.to(device.torch_device).model_inputs()).loss
            total += float(loss) * count
            weight += count
    return total / max(1, weight)
