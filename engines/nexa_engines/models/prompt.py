"""The one prompt format the engines train, evaluate and serve with.

A model fine-tuned by Nexa sees ``### Instruction:`` / ``### Response:`` blocks; a
chat conversation is the same blocks in order, so a single-turn chat and a plain
instruction produce identical prompts and the serving process answers both alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SYSTEM = "### System:\n"
INSTRUCTION = "### Instruction:\n"
RESPONSE = "### Response:\n"
_ROLE_HEADERS = {"system": SYSTEM, "user": INSTRUCTION, "assistant": RESPONSE}


def format_prompt(instruction: str, system: str | None = None) -> str:
    """The prompt that asks the model to answer ``instruction``."""
    head = f"{SYSTEM}{system.strip()}\n" if system else ""
    return f"{head}{INSTRUCTION}{instruction.strip()}\n{RESPONSE}"


def format_chat(messages: Iterable[Mapping[str, str]]) -> str:
    """The prompt for an OpenAI-style message list, ending where the assistant's answer starts."""
    parts = []
    for message in messages:
        header = _ROLE_HEADERS.get(str(message.get("role", "user")), INSTRUCTION)
        parts.append(f"{header}{str(message.get('content') or '').strip()}\n")
    return "".join(parts) + RESPONSE


def clean_completion(text: str) -> str:
    """The answer part of a generation: cut at the next block header, trimmed."""
    cut = len(text)
    for marker in ("###", "\n\n"):
        at = text.find(marker)
        if at != -1:
            cut = min(cut, at)
    return text[:cut].strip()


def normalize_answer(text: str) -> str:
    """What exact match compares: first line, lower case, single spaces, no trailing period."""
    first = clean_completion(text).splitlines()[0] if clean_completion(text) else ""
    return " ".join(first.lower().split()).rstrip(".").strip()
