"""Where the client finds its gateway and API key.

Order: explicit arguments, then the environment (``NEXA_API_KEY``,
``NEXA_BASE_URL``), then ``$NEXA_HOME/config.json`` written by ``nexa up``
(``NEXA_HOME`` defaults to ``~/.nexa``), then the default base URL
``http://127.0.0.1:8080``. The config file holds ``base_url``, ``api_key``,
``worker_secret`` and ``pid_file``; it is written atomically with mode 0600
because it holds secrets.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nexa.errors import ConfigError

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
CONFIG_NAME = "config.json"
ENV_API_KEY = "NEXA_API_KEY"
ENV_BASE_URL = "NEXA_BASE_URL"
ENV_HOME = "NEXA_HOME"

NO_API_KEY_MESSAGE = (
    "No Nexa API key found. Start a local gateway with `nexa up` (it writes one to "
    "{path}), or set the NEXA_API_KEY environment variable, or pass api_key= to the client."
)


def nexa_home() -> Path:
    """The directory holding Nexa's local state: ``$NEXA_HOME``, else ``~/.nexa``."""
    return Path(os.environ.get(ENV_HOME) or "~/.nexa").expanduser()


def config_path() -> Path:
    """Path of the config file written by ``nexa up``."""
    return nexa_home() / CONFIG_NAME


def load_config() -> dict[str, Any]:
    """The config file's contents, or ``{}`` when there is none; ConfigError when it is unreadable."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or delete it"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}; fix or delete it")
    return data


def save_config(updates: dict[str, Any]) -> Path:
    """Merge ``updates`` into the config file (keys set to None are removed); atomic, mode 0600."""
    path = config_path()
    merged = load_config()
    for key, value in updates.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write a sibling temp file and rename it over the target: a reader never sees half a file,
    # and the secret is never readable by others, not even for a moment (mkstemp creates 0600).
    fd, tmp_name = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(merged, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def resolve(api_key: str | None = None, base_url: str | None = None) -> tuple[str, str | None]:
    """The ``(base_url, api_key)`` to use: arguments, then environment, then config file, then defaults."""
    key = api_key or os.environ.get(ENV_API_KEY) or None
    url = base_url or os.environ.get(ENV_BASE_URL) or None
    if key is None or url is None:
        stored = load_config()
        key = key or _str_or_none(stored.get("api_key"))
        url = url or _str_or_none(stored.get("base_url"))
    return (url or DEFAULT_BASE_URL).rstrip("/"), key


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
