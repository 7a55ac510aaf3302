"""A realistic instruction/response dataset built from Nexa's own templates, with planted problems.

Clean rows are arithmetic, capital cities, unit conversions, string puzzles and
longer field notes. Planted at known rows: exact duplicates, near duplicates (a word
changed in a long row), empty responses, PII, non-text garbage and
repetitive text. Tests and the demo check that an audit finds what was planted.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Brazil", "Brasilia"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("India", "New Delhi"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Poland", "Warsaw"),
    ("Greece", "Athens"), ("Turkey", "Ankara"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Vietnam", "Hanoi"), ("Thailand", "Bangkok"),
    ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Morocco", "Rabat"),
    ("Ghana", "Accra"), ("New Zealand", "Wellington"),
)  # fmt: skip
CAPITAL_QUESTIONS = (
    "What is the capital of {c}?",
    "Name the capital city of {c}.",
    "Which city is the capital of {c}?",
    "Tell me the capital of {c}.",
)
UNITS = (
    ("kilometers", "miles", 0.621371),
    ("miles", "kilometers", 1.609344),
    ("kilograms", "pounds", 2.204623),
    ("pounds", "kilograms", 0.453592),
    ("liters", "gallons", 0.264172),
    ("meters", "feet", 3.280840),
    ("inches", "centimeters", 2.54),
)
WORDS = (
    "lantern", "harbor", "meadow", "crystal", "voyage", "thunder", "orchard", "compass", "granite",
    "willow", "ember", "canyon", "falcon", "glacier", "marble", "saffron", "tundra", "velvet", "zephyr",
    "quartz", "nebula", "prairie", "riddle", "summit", "timber", "beacon", "cobalt", "dune", "fjord",
)  # fmt: skip
NAMES = ("Ada", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ines", "Jonas", "Kiri", "Luca")
PLACES = (
    "the north ridge",
    "the old mill",
    "the river delta",
    "the east field",
    "the coastal path",
    "the quarry",
)
THINGS = ("migrating geese", "soil samples", "tide pools", "wind readings", "beehives", "lichen patches")
NOTE_SENTENCES = (
    "In {year}, {name} recorded {n} observations of {thing} near {place}.",
    "The team measured an average of {x} units per hour during the {word} survey.",
    "{name} noticed that {thing} were {n} percent more common after the rain.",
    "A second visit to {place} on day {n} confirmed the earlier count of {m}.",
    "Equipment labelled {word}-{n} failed twice and was replaced by {name}.",
    "By week {n}, the log for {place} held {m} entries about {thing}.",
    "Readings taken at {x} degrees differed from the {word} baseline by {m} points.",
    "{name} and {name2} agreed to repeat the {word} check every {n} days.",
    "Notes from {year} suggest {thing} had moved toward {place} by then.",
    "The estimate for {thing} rose from {m} to {n} once {name} added the missing sheets.",
)
NOTE_TOPICS = ("the field season", "the survey results", "the monitoring project", "the station logbook")


def _note(rng: random.Random, sentences: int) -> str:
    parts = []
    for _ in range(sentences):
        template = rng.choice(NOTE_SENTENCES)
        name, name2 = rng.sample(NAMES, 2)
        parts.append(
            template.format(
                year=rng.randint(1990, 2024),
                name=name,
                name2=name2,
                n=rng.randint(2, 900),
                m=rng.randint(2, 900),
                x=round(rng.uniform(1, 99), 1),
                thing=rng.choice(THINGS),
                place=rng.choice(PLACES),
                word=rng.choice(WORDS),
            )
        )
    return " ".join(parts)


def _clean_row(rng: random.Random) -> tuple[str, str, str]:
    kind = rng.choices(("arithmetic", "capital", "units", "reverse", "sort", "note"), (3, 1, 2, 2, 2, 2))[0]
    if kind == "arithmetic":
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        op, word, value = rng.choice(
            ((" + ", "plus", a + b), (" - ", "minus", a - b), (" * ", "times", a * b))
        )
        return kind, f"What is {a}{op}{b}?", f"{a} {word} {b} equals {value}."
    if kind == "capital":
        country, capital = rng.choice(CAPITALS)
        question = rng.choice(CAPITAL_QUESTIONS).format(c=country)
        return kind, question, f"The capital of {country} is {capital}."
    if kind == "units":
        src, dst, factor = rng.choice(UNITS)
        x = round(rng.uniform(1, 500), rng.choice((0, 1, 2)))
        return kind, f"Convert {x:g} {src} to {dst}.", f"{x:g} {src} is about {x * factor:.2f} {dst}."
    if kind == "reverse":
        word = rng.choice(WORDS) + rng.choice(WORDS)
        return kind, f"Reverse the string '{word}'.", f"Reversed, '{word}' reads '{word[::-1]}'."
    if kind == "sort":
        nums = [rng.randint(1, 999) for _ in range(rng.randint(4, 8))]
        listed = ", ".join(map(str, nums))
        return kind, f"Sort these numbers in ascending order: {listed}.", ", ".join(map(str, sorted(nums)))
    topic = rng.choice(NOTE_TOPICS)
    return kind, f"Write a short summary of {topic}.", _note(rng, rng.randint(9, 14))


def _key(instruction: str, response: str) -> str:
    return re.sub(r"\W+", " ", f"{instruction} {response}".lower()).strip()


def _garbage(rng: random.Random, variant: int) -> str:
    if variant % 2 == 0:
        raw = bytes(rng.randint(1, 255) for _ in range(rng.randint(80, 200)))
        return raw.decode("utf-8", errors="replace")
    return "".join(rng.choice("#%&*@!^~|<>{}[]=+$") for _ in range(rng.randint(40, 120)))


def _repetitive(rng: random.Random, variant: int) -> str:
    phrase = rng.choice(("I don't know.", "Sorry, I cannot help with that.", "ha", "Thanks!"))
    if variant % 3 == 0:
        return "\n".join([phrase] * rng.randint(8, 20))
    if variant % 3 == 1:
        return " ".join([phrase] * rng.randint(15, 40))
    return rng.choice("az!") * rng.randint(60, 200)


def _pii(rng: random.Random, variant: int) -> str:
    name = rng.choice(NAMES).lower()
    if variant % 2 == 0:
        return f"Sure, email me at {name}.{rng.randint(10, 99)}@example.org and I will send the file."
    return f"Please call me at ({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)} tomorrow."


def _tweak(rng: random.Random, text: str) -> str:
    """One word replaced and another's case changed: a near copy, not an exact one."""
    words = text.split(" ")
    replace, recase = rng.sample(range(len(words)), 2)
    words[replace] = rng.choice(("really", "quite", "notably", "also"))
    words[recase] = words[recase].upper()
    return " ".join(words)


def _problem_response(rng: random.Random, kind: str, *, variant: int) -> str:
    if kind == "empty":
        return rng.choice(("", "   ", "\n"))
    if kind == "pii":
        return _pii(rng, variant)
    if kind == "non_text":
        return _garbage(rng, variant)
    return _repetitive(rng, variant)


def generate_sft_dataset(
    path: Path, num_rows: int = 2000, seed: int = 0, fmt: str = "parquet"
) -> dict[str, Any]:
    """Write the dataset to ``path`` as parquet, jsonl or csv; return the planted rows and their counts."""
    if fmt not in ("parquet", "jsonl", "csv"):
        raise ValueError(f"fmt must be parquet, jsonl or csv, not {fmt!r}")
    if num_rows < 100:
        raise ValueError("num_rows must be at least 100 so every problem can be planted")
    rng = random.Random(seed)
    per_kind = max(2, num_rows // 50)
    kinds = ("exact_duplicate", "near_duplicate", "empty", "pii", "non_text", "repetitive")
    # Planted rows sit after the first tenth, so duplicates always have an earlier original.
    slots = rng.sample(range(num_rows // 10, num_rows), per_kind * len(kinds))
    planted = {kind: sorted(slots[i * per_kind : (i + 1) * per_kind]) for i, kind in enumerate(kinds)}
    at = {row: kind for kind, rows in planted.items() for row in rows}

    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    clean: dict[bool, list[int]] = {True: [], False: []}  # is a note -> clean row indices so far
    used_sources: set[int] = set()
    sources: dict[int, int] = {}
    for i in range(num_rows):
        kind = at.get(i)
        if kind in ("exact_duplicate", "near_duplicate"):
            # Near copies come from long notes: a one-word change in a short row is a new row.
            pool = clean[kind == "near_duplicate"]
            src = next((j for j in rng.sample(pool, min(len(pool), 20)) if j not in used_sources), None)
            if src is not None:
                used_sources.add(src)
                sources[i] = src
                category, instruction, response = rows[src]
                rows.append(
                    (category, instruction, response if kind == "exact_duplicate" else _tweak(rng, response))
                )
                continue
            planted[kind].remove(i)  # no original available yet: the row stays clean
            kind = None
        if kind is None:
            while True:
                row = _clean_row(rng)
                # One capital question per country: two phrasings of one fact are near copies.
                key = row[2] if row[0] == "capital" else _key(row[1], row[2])
                if key not in seen:
                    seen.add(key)
                    clean[row[0] == "note"].append(i)
                    rows.append(row)
                    break
            continue
        category, instruction, _ = _clean_row(rng)
        rows.append((category, instruction, _problem_response(rng, kind, variant=i)))

    table = pa.table(
        {
            "id": pa.array(range(num_rows), type=pa.int64()),
            "category": [r[0] for r in rows],
            "instruction": [r[1] for r in rows],
            "response": [r[2] for r in rows],
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        with path.open("w", encoding="utf-8") as fh:
            for record in table.to_pylist():
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {
        "path": str(path),
        "format": fmt,
        "num_rows": num_rows,
        "columns": table.column_names,
        "planted": planted,
        "sources": sources,
        "counts": {kind: len(rows_) for kind, rows_ in planted.items()},
    }
