"""The shipped price books (the SPEC's, the default, and Forge's resource rates) and loading one.

``NEXA_PRICE_BOOK`` names a preset (``spec``, ``forge``) or a JSON file holding a
``PriceBook``: an operator changes prices by adding a version with a later
``effective_from``, so usage already recorded keeps the price it had.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pydantic import ValidationError

from nexa.contracts.billing import PriceBook, PriceBookVersion, Rate
from nexa.contracts.jobs import JobType

SINCE = datetime(2024, 1, 1, tzinfo=UTC)
HOURS_PER_MONTH = Decimal(730)  # 365 × 24 / 12: a month of deployment, prorated by the hour


def _rate(kind: str, price: str, per: int | Decimal = 1, label: str = "", **only: list[str]) -> Rate:
    return Rate.model_validate({"kind": kind, "price": price, "per": per, "label": label, **only})


# SPEC §9: audit $0.20 per 1,000 rows; distill $0.30 per 1M tokens; train $1.25 per A100-hour;
# evaluate $0.10 per 100 samples; deploy $2 per month. Generate is teacher tokens like distill.
# A GPU type the SPEC does not price is charged at its A100 rate until the operator adds one.
SPEC = PriceBook(
    name="spec",
    versions=[
        PriceBookVersion(
            effective_from=SINCE,
            rates=[
                _rate("rows", "0.20", 1000, "audit, per 1,000 rows", job_types=[JobType.audit]),
                *(
                    _rate(kind, "0.30", 1_000_000, f"{kind.split('_')[0]} tokens, per 1M", job_types=[t])
                    for kind in ("prompt_tokens", "completion_tokens")
                    for t in (JobType.distill, JobType.generate)
                ),
                _rate("gpu_hours", "1.25", 1, "A100-hours", gpu_types=["A100"]),
                _rate("gpu_hours", "1.25", 1, "GPU-hours (A100 rate)"),
                _rate("samples", "0.10", 100, "evaluation, per 100 samples", job_types=[JobType.evaluate]),
                _rate("deployment_hours", "2.00", HOURS_PER_MONTH, "deployment, $2 per month prorated"),
            ],
        )
    ],
)

# Forge "Billing & Metering": GPU-hour $2.50; input tokens $10 and output $30 per 1M; storage $0.02/GB-month.
FORGE = PriceBook(
    name="forge",
    versions=[
        PriceBookVersion(
            effective_from=SINCE,
            rates=[
                _rate("gpu_hours", "2.50", 1, "GPU-hours"),
                _rate("prompt_tokens", "10.00", 1_000_000, "input tokens, per 1M"),
                _rate("completion_tokens", "30.00", 1_000_000, "output tokens, per 1M"),
                _rate("storage_gb_months", "0.02", 1, "storage, per GB-month"),
            ],
        )
    ],
)

PRESETS = {"spec": SPEC, "forge": FORGE}


def load_price_book(setting: str) -> PriceBook:
    """The preset named ``setting``, or the ``PriceBook`` JSON file it names; ``ValueError`` saying why not."""
    if setting in PRESETS:
        return PRESETS[setting]
    path = Path(setting).expanduser()
    if not path.is_file():
        raise ValueError(f"NEXA_PRICE_BOOK={setting!r}: not a preset ({', '.join(PRESETS)}) nor a JSON file")
    try:
        return PriceBook.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"NEXA_PRICE_BOOK={setting!r}: not a valid price book: {exc}") from exc
