"""Packed vs padded SFT training: padding waste, real tokens per second, and the loss each reaches.

Same tiny Llama model (same initial weights), same examples, same optimizer, same
number of epochs; only the batching differs. Padded batches hold ``batch_size``
examples right-padded to the longest; packed rows hold several examples in
``capacity`` tokens with per-example positions and a block-diagonal mask. Both
runs are timed in this one process, back to back, so the ratio is meaningful on a
shared machine. Examples are the demo SFT rows (varied lengths).

    NEXA_TORCH_THREADS=2 .venv/bin/python bench/bench_packing_train.py [--rows 600 --epochs 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from nexa_engines.models.loading import ResolvedModel, load_model, load_tokenizer
from nexa_engines.models.runtime import configure_threads, pick_device, seed_everything
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, corpus_for
from nexa_engines.sample_data import generate_sft_dataset
from nexa_engines.train.data import read_table, sft_pairs, split_holdout, tokenize_pairs
from nexa_engines.train.trainer import LoopConfig, Trainer, evaluate_loss, make_units


def _train(
    model: Any, examples: list[Any], *, packing: bool, args: argparse.Namespace, pad: int
) -> dict[str, Any]:
    device = pick_device()
    seed_everything(args.seed)
    # Padded batches take ``batch_size`` examples; packed rows take about capacity/mean-length each, so
    # the packed batch size is chosen to see about the same examples per step (same number of steps).
    mean_len = sum(len(e.input_ids) for e in examples) / len(examples)
    rows_per_batch = max(1, round(args.batch_size * mean_len / args.capacity)) if packing else args.batch_size
    units = make_units(examples, packing, args.capacity, pad)
    config = LoopConfig(
        learning_rate=args.lr, batch_size=rows_per_batch, grad_accum=1, max_seq_len=args.capacity,
        warmup_ratio=0.05, weight_decay=0.0, packing=packing, seed=args.seed, epochs=args.epochs,
        checkpoint_every=10**9,
    )  # fmt: skip
    trainer = Trainer(model.to(device.torch_device), units, config, device)
    summary = trainer.run()
    summary["batch_rows"] = rows_per_batch
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="examples per padded batch")
    parser.add_argument("--capacity", type=int, default=512, help="tokens per packed row")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/out/packing_train.json"))
    args = parser.parse_args(argv)
    threads = configure_threads()
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        data = Path(tmp) / "sft.parquet"
        generate_sft_dataset(data, num_rows=args.rows, seed=1)
        pairs = sft_pairs(read_table(data, "parquet"))
        train_pairs, held = split_holdout(pairs, 0.1, args.seed)
        rows = [{"instruction": p, "response": r} for p, r in pairs]
        base = build_tiny_model(Path(tmp) / "base", corpus_for(rows), TinyConfig(vocab_size=512))
        resolved = ResolvedModel(str(base), str(base))
        tokenizer = load_tokenizer(resolved)
        initial = load_model(resolved, dtype=torch.float32)
        examples = tokenize_pairs(tokenizer, train_pairs, args.capacity)
        held_units = make_units(
            tokenize_pairs(tokenizer, held, args.capacity), False, args.capacity, tokenizer.pad_token_id
        )
        results: dict[str, Any] = {
            "threads": threads,
            "examples": len(examples),
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        for name, packing in (("padded", False), ("packed", True)):
            model = copy.deepcopy(initial)
            summary = _train(model, examples, packing=packing, args=args, pad=tokenizer.pad_token_id)
            summary["holdout_loss"] = round(evaluate_loss(model, held_units, 16, pick_device()), 4)
            results[name] = summary
            print(name, json.dumps(summary))
    padded, packed = results["padded"], results["packed"]
    results["speedup_tokens_per_s"] = round(packed["tokens_per_s"] / padded["tokens_per_s"], 2)
    print(
        f"padding waste: padded {padded['padding_waste']:.1%}, packed {packed['padding_waste']:.1%}; "
        f"tokens/s: padded {padded['tokens_per_s']:.0f}, packed {packed['tokens_per_s']:.0f} "
        f"({results['speedup_tokens_per_s']}x); held-out loss: padded {padded['holdout_loss']}, packed {packed['holdout_loss']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
