"""The outbound policy: which URLs Nexa calls on a user's behalf. No request leaves this machine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any

import httpx
import pytest

from nexa_store.access import AccessDenied
from nexa_store.outbound import OutboundPolicy, check_url

DEFAULT = OutboundPolicy()

REFUSED_BY_DEFAULT = [
    "http://127.0.0.1:8000/v1",
    "http://localhost:8000/v1",
    "http://api.localhost/v1",
    "http://[::1]:8000/v1",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/v1",
    "http://10.0.0.5/v1",
    "http://172.16.3.4/v1",
    "http://192.168.1.1/v1",
    "http://100.64.0.1/v1",  # CGNAT
    "http://0.0.0.0/v1",
    "http://224.0.0.1/v1",
    "http://[::ffff:127.0.0.1]/v1",  # IPv4-mapped loopback
    "http://[fd00::1]/v1",  # unique local
    "http://[64:ff9b::a9fe:a9fe]/v1",  # NAT64 of the metadata address
    "http://[2002:a9fe:a9fe::1]/v1",  # 6to4 of the metadata address
    "ftp://93.184.215.14/file",
    "http://user:pw@93.184.215.14/v1",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", REFUSED_BY_DEFAULT)
def test_non_public_targets_are_refused_by_default(url: str) -> None:
    with pytest.raises(AccessDenied) as info:
        check_url(url, policy=DEFAULT)
    assert info.value.code == "url_not_allowed"


@pytest.mark.parametrize(
    "url", ["https://93.184.215.14/v1", "https://api.openai.com/v1", "http://[2606:4700::1]/"]
)
def test_public_targets_pass(url: str) -> None:
    assert check_url(url, policy=DEFAULT) == url


def test_allowlist_admits_named_hosts_and_networks() -> None:
    policy = OutboundPolicy.from_env(
        {"NEXA_OUTBOUND_ALLOWLIST": "10.1.0.0/16, vllm.internal, *.corp.example"}
    )
    check_url("http://10.1.2.3:8000/v1", policy=policy)
    check_url("http://vllm.internal:8000/v1", policy=policy)
    check_url("http://gpu.corp.example/v1", policy=policy)
    with pytest.raises(AccessDenied):
        check_url("http://10.2.0.1/v1", policy=policy)


def test_loopback_allowlist_is_what_nexa_up_uses() -> None:
    policy = OutboundPolicy.from_env({"NEXA_OUTBOUND_ALLOWLIST": "127.0.0.0/8,::1,localhost"})
    check_url("http://127.0.0.1:9000/v1", policy=policy)
    check_url("http://localhost:9000/v1", policy=policy)
    with pytest.raises(AccessDenied):
        check_url("http://169.254.169.254/", policy=policy)


def test_only_allowlist_refuses_public_hosts_too() -> None:
    policy = OutboundPolicy.from_env(
        {"NEXA_OUTBOUND_ALLOWLIST": "api.openai.com", "NEXA_OUTBOUND_ONLY_ALLOWLIST": "1"}
    )
    check_url("https://api.openai.com/v1", policy=policy)
    with pytest.raises(AccessDenied):
        check_url("https://93.184.215.14/v1", policy=policy)
    with pytest.raises(AccessDenied):
        check_url("https://api.other.example/v1", policy=policy)


def test_a_name_is_checked_by_what_it_resolves_to() -> None:
    """localhost.nip.io-style names pass as written but not once resolved: 'localhost' here resolves locally."""
    with pytest.raises(AccessDenied):
        check_url("http://localhost:1/v1", resolve=True, policy=DEFAULT)
    # A name that resolves nowhere is left to fail on the call itself.
    assert check_url("http://no-such-host.invalid/v1", resolve=True, policy=DEFAULT)


def test_worker_keys_go_only_to_their_providers_endpoint() -> None:
    """A key in the worker's environment is the platform's: a user-chosen URL never gets it unasked."""
    from nexa_store.outbound import check_key_env_name, key_for_url

    env = {"OPENAI_API_KEY": "sk-platform", "NEXA_WORKER_SECRET": "s", "CORP_API_KEY": "c"}
    official = "https://api.openai.com/v1"
    assert key_for_url("OPENAI_API_KEY", official, official_url=official, env=env) == "sk-platform"
    for name, url in [
        ("OPENAI_API_KEY", "https://attacker.example/v1"),
        ("NEXA_WORKER_SECRET", official),
        ("AWS_SECRET_ACCESS_KEY", official),
        ("NEXA_S3_SECRET_KEY", official),
    ]:
        with pytest.raises(AccessDenied) as info:
            key_for_url(name, url, official_url=official, env=env)
        assert info.value.code == "key_env_not_allowed"
    allowed = {**env, "NEXA_OUTBOUND_KEY_ENVS": "CORP_API_KEY"}
    assert key_for_url("CORP_API_KEY", "https://llm.corp.example/v1", env=allowed) == "c"
    with pytest.raises(AccessDenied):
        check_key_env_name("NEXA_API_KEY")


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (self.headers.get("Host") or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


LOOPBACK = OutboundPolicy.from_env({"NEXA_OUTBOUND_ALLOWLIST": "127.0.0.0/8"})


def test_connections_are_vetted_when_they_open_not_only_before(
    loopback_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexa_store import outbound_transport

    # DNS rebinding: the name passed check_url as a public address; now it answers loopback.
    monkeypatch.setattr(
        outbound_transport, "resolved_addresses", lambda host, port: [ip_address("127.0.0.1")]
    )
    url = f"http://rebind.example:{loopback_server}/"
    with httpx.Client(transport=outbound_transport.policy_transport(OutboundPolicy())) as client:
        with pytest.raises(httpx.ConnectError, match="127.0.0.1, which is not allowed"):
            client.get(url)
        with pytest.raises(httpx.ConnectError, match="not an allowed address"):
            client.get(f"http://127.0.0.1:{loopback_server}/")
    # Where loopback is allowed, the connection goes to the vetted address itself (the name is
    # not resolvable at all) and the request still names the host it was made for.
    with httpx.Client(transport=outbound_transport.policy_transport(LOOPBACK)) as client:
        answer = client.get(url)
    assert answer.status_code == 200 and answer.text == f"rebind.example:{loopback_server}"


def test_the_async_transport_vets_connections_too(
    loopback_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexa_store import outbound_transport

    monkeypatch.setattr(
        outbound_transport, "resolved_addresses", lambda host, port: [ip_address("127.0.0.1")]
    )

    async def fetch(policy: OutboundPolicy) -> str:
        transport = outbound_transport.async_policy_transport(policy)
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.get(f"http://rebind.example:{loopback_server}/")).text

    with pytest.raises(httpx.ConnectError, match="not allowed"):
        asyncio.run(fetch(OutboundPolicy()))
    assert asyncio.run(fetch(LOOPBACK)) == f"rebind.example:{loopback_server}"
