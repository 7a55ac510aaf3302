"""Tiny Llama-style models built from a config, with a tokenizer trained on local text.

Nothing is downloaded: the tokenizer is a byte-level BPE trained with the
``tokenizers`` library on the texts given, the model is a ``LlamaForCausalLM``
with random weights, and both are written with ``save_pretrained`` so every
loader (train, evaluate, serve) reads them like any Hugging Face model.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nexa_engines.models.prompt import INSTRUCTION, RESPONSE, SYSTEM, format_prompt
from nexa_engines.sample_data import CAPITALS

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
OPPOSITES = (
    ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("day", "night"),
    ("left", "right"), ("open", "closed"), ("early", "late"), ("happy", "sad"), ("light", "dark"),
    ("full", "empty"), ("wet", "dry"), ("old", "new"), ("hard", "soft"), ("high", "low"),
)  # fmt: skip
_TEMPLATES = {
    "capital": (
        "What is the capital of {x}?",
        "Name the capital city of {x}.",
        "Which city is the capital of {x}?",
    ),
    "opposite": (
        "What is the opposite of {x}?",
        "Give the opposite of the word {x}.",
        "Name the antonym of {x}.",
    ),
    "add": ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."),
    "next": ("What number comes after {a}?", "Which number follows {a}?", "Count one up from {a}."),
}


def learnable_rows(seed: int = 0) -> list[dict[str, str]]:
    """Short-answer instruction data (capitals, opposites, small sums, successors) a tiny model learns fast.

    Every fact is asked with three templates and the rows are shuffled, so a random
    hold-out asks known facts in a wording the model may not have seen with them.
    """
    rows: list[dict[str, str]] = []
    for country, capital in CAPITALS:
        rows += [{"instruction": t.format(x=country), "response": capital} for t in _TEMPLATES["capital"]]
    for word, opposite in OPPOSITES:
        rows += [{"instruction": t.format(x=word), "response": opposite} for t in _TEMPLATES["opposite"]]
    for a in range(10):
        for b in range(10):
            template = _TEMPLATES["add"][(a + b) % 3]
            rows.append({"instruction": template.format(a=a, b=b), "response": str(a + b)})
    for a in range(1, 40):
        rows += [{"instruction": t.format(a=a), "response": str(a + 1)} for t in _TEMPLATES["next"][:2]]
    random.Random(seed).shuffle(rows)
    return rows


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> object:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (digits split one by one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=True)]
    )
    # A leading space on every text makes an answer "apple" the same token as " apple" inside the prompt,
    # so copying a word is one token to one token.
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The prompt headers are in every example: make sure they tokenize compactly.
    corpus = list(texts) + [SYSTEM, INSTRUCTION, RESPONSE] * 50
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=2048,
    )


@dataclass(frozen=True)
class TinyConfig:
    """The size of a tiny model."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 176
    vocab_size: int = 512
    max_positions: int = 512
    seed: int = 0


def build_tiny_model(directory: Path, texts: Iterable[str], config: TinyConfig | None = None) -> Path:
    """Train a tokenizer on ``texts``, build a random Llama model of ``config`` and save both to ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = config or TinyConfig()
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(model_config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def corpus_for(rows: Iterable[dict[str, str]]) -> list[str]:
    """The texts a tokenizer for ``rows`` should be trained on: the prompts exactly as training formats them."""
    return [format_prompt(r["instruction"]) + r["response"] for r in rows]


# ---- a task a tiny model learns on CPU in a few minutes, with a held-out split it has never seen

WORDS = (
    "apple river stone cloud green tiger house paper music water bread light chair storm dream "
    "horse silver garden winter summer ocean forest candle rocket planet bottle window mirror pencil yellow"
).split()
_WORD_TEMPLATES = {
    "repeat": (
        "Repeat the word {x}.", "Say {x}.", "Echo this word: {x}",
        "Write {x} again.", "Copy the word {x}.", "Please repeat {x}.",
    ),
    "opposite": (
        "What is the opposite of {x}?", "Give the opposite of {x}.", "Name the antonym of {x}.",
        "The reverse of {x} is?", "Opposite of {x}?", "What word means the opposite of {x}?",
    ),
}  # fmt: skip


def word_task_rows(seed: int = 0) -> list[dict[str, str]]:
    """Every (wording, word) pair of two one-word tasks: repeat a word, and give its opposite.

    Each word is asked with six wordings, so any random held-out row is a new
    combination: the model has seen the word and the wording, never together.
    Answering it needs the structure (find the word, copy or map it), not a
    memorised row, which is what makes held-out exact match meaningful.
    """
    rows = [{"instruction": t.format(x=w), "response": w} for w in WORDS for t in _WORD_TEMPLATES["repeat"]]
    for a, b in OPPOSITES:
        for t in _WORD_TEMPLATES["opposite"]:
            rows += [
                {"instruction": t.format(x=a), "response": b},
                {"instruction": t.format(x=b), "response": a},
            ]
    random.Random(seed).shuffle(rows)
    return rows


def word_task_corpus(rows: Iterable[dict[str, str]]) -> list[str]:
    """Tokenizer texts for ``word_task_rows``: every word must become one token, as it appears in answers."""
    vocabulary = " ".join(WORDS + [w for pair in OPPOSITES for w in pair])
    return corpus_for(rows) + [vocabulary] * 200


# The recipe the demo, the lifecycle test and the docs use: on a busy 2-core machine
# the held-out exact match goes from 0 to above 0.9 within 600 steps (about 2 minutes).
# Smaller batches mean more updates per second; the phase where the model starts
# copying the prompt word arrives after about 350 updates at this learning rate.
STUDENT = TinyConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, vocab_size=512)
STUDENT_HYPERPARAMETERS = {
    "learning_rate": 1e-2,
    "batch_size": 2,
    "max_seq_len": 256,
    "warmup_ratio": 0.05,
    "packing": True,
    "seed": 1,
}
STUDENT_MAX_STEPS = 600
STUDENT_HOLDOUT_FRACTION = 0.1
