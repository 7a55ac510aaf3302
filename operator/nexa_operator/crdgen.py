"""Write the CRDs generated from the contracts to ``crds/`` (``python -m nexa_operator.crdgen``).

``--check`` writes nothing and exits 1 naming every stale or missing file, so CI
and the drift test fail when someone changed a contract without regenerating.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from nexa_operator.crdschema import all_crds

HEADER = "# Generated from sdk/nexa/contracts by `python -m nexa_operator.crdgen`. Do not edit.\n"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "crds"


def render(crd: dict[str, Any]) -> str:
    """One CRD as the YAML text written to its file."""
    return HEADER + str(yaml.safe_dump(crd, sort_keys=False, allow_unicode=True, width=100))


def rendered() -> dict[str, str]:
    """Every CRD file's expected text by file name."""
    return {name: render(crd) for name, crd in all_crds().items()}


def stale_files(out_dir: Path) -> list[str]:
    """Names of CRD files under ``out_dir`` that are missing or differ from the contracts."""
    stale = []
    for name, text in rendered().items():
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(out_dir: Path) -> list[Path]:
    """Write every CRD file; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nexa_operator.crdgen", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="directory to write (default: crds/)")
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {args.out / name} (run `python -m nexa_operator.crdgen`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
