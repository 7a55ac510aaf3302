"""Where the SDK finds its gateway and key, and how `nexa up`'s config file is written."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from nexa import ConfigError, NexaClient
from nexa.config import DEFAULT_BASE_URL, load_config, nexa_home, resolve, save_config


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEXA_HOME", str(tmp_path / "nexa-home"))
    monkeypatch.delenv("NEXA_API_KEY", raising=False)
    monkeypatch.delenv("NEXA_BASE_URL", raising=False)
    return tmp_path / "nexa-home"


def test_nexa_home_defaults_to_dot_nexa(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NEXA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert nexa_home() == tmp_path / ".nexa"


def test_defaults_without_env_or_file(home: Path) -> None:
    assert resolve() == (DEFAULT_BASE_URL, None)


@pytest.mark.parametrize(
    ("args", "env", "stored", "want"),
    [
        (
            (None, None),
            {},
            {"api_key": "file-key", "base_url": "http://file:1"},
            ("http://file:1", "file-key"),
        ),
        (
            (None, None),
            {"NEXA_API_KEY": "env-key", "NEXA_BASE_URL": "http://env:2/"},
            {"api_key": "file-key", "base_url": "http://file:1"},
            ("http://env:2", "env-key"),
        ),
        (
            ("arg-key", "http://arg:3"),
            {"NEXA_API_KEY": "env-key", "NEXA_BASE_URL": "http://env:2"},
            {"api_key": "file-key"},
            ("http://arg:3", "arg-key"),
        ),
        # Each value is resolved on its own: a key from the env, the URL from the file.
        (
            (None, None),
            {"NEXA_API_KEY": "env-key"},
            {"base_url": "http://file:1"},
            ("http://file:1", "env-key"),
        ),
    ],
)
def test_precedence_args_then_env_then_file(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str | None, str | None],
    env: dict[str, str],
    stored: dict[str, str],
    want: tuple[str, str | None],
) -> None:
    save_config(stored)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve(*args) == want


def test_save_config_merges_removes_and_is_private(home: Path) -> None:
    save_config({"base_url": "http://a", "api_key": "k1", "pid_file": "/tmp/p"})
    path = save_config({"api_key": "k2", "pid_file": None, "worker_secret": "s"})
    assert path == home / "config.json"
    assert json.loads(path.read_text()) == {"base_url": "http://a", "api_key": "k2", "worker_secret": "s"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in home.iterdir()] == ["config.json"]  # no temp file left behind


def test_corrupt_config_is_a_clear_error(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        load_config()
    (home / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        resolve()


def test_client_picks_up_the_config_file(home: Path) -> None:
    save_config({"base_url": "http://127.0.0.1:9999", "api_key": "nexa_from_file"})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    with NexaClient(transport=httpx.MockTransport(handler)) as client:
        assert client.base_url == "http://127.0.0.1:9999"
        assert client.health() == {"status": "ok"}
    assert str(seen[0].url) == "http://127.0.0.1:9999/readyz"
    assert seen[0].headers["authorization"] == "Bearer nexa_from_file"


def test_missing_key_tells_the_user_what_to_do(home: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ok"})

    client = NexaClient(transport=httpx.MockTransport(handler))
    assert client.api_key is None
    assert client.health() == {"status": "ok"}  # the readiness probe needs no key
    with pytest.raises(ConfigError) as info:
        client.status("job_aaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert "nexa up" in str(info.value) and "NEXA_API_KEY" in str(info.value)
