"""HTTP transports that connect only to addresses the outbound policy allows, at connect time.

``check_url`` vets a URL before a job starts calling it, but the HTTP client
would resolve the name again for every new connection: a DNS server that
answers a public address first and ``127.0.0.1`` a moment later (DNS
rebinding) would slip through. These transports resolve the name themselves,
keep only allowed addresses, and open the TCP connection to one of those; TLS
still verifies the certificate against the host name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import anyio.to_thread
import httpcore
import httpx

from nexa_store.outbound import (
    IPAddress,
    OutboundPolicy,
    address_allowed,
    is_localhost_name,
    resolved_addresses,
)


def vetted_addresses(policy: OutboundPolicy, host: str, port: int) -> list[str]:
    """The addresses to connect to for ``host``; ``httpcore.ConnectError`` when the policy refuses it.

    As in ``check_url``: a host the allowlist names may go anywhere it resolves; any
    other name must resolve only to allowed addresses.
    """
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        if not address_allowed(policy, literal):
            raise httpcore.ConnectError(f"outbound policy: {literal} is not an allowed address")
        return [str(literal)]
    if is_localhost_name(host):
        loopback = ipaddress.ip_address("127.0.0.1")
        if not policy.host_listed(host) and not address_allowed(policy, loopback):
            raise httpcore.ConnectError(f"outbound policy: {host} is not an allowed address")
        return [str(loopback)]
    addresses = resolved_addresses(host, port)
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host}")
    if not policy.host_listed(host):
        refused = [a for a in addresses if not address_allowed(policy, a)]
        if refused:
            raise httpcore.ConnectError(
                f"outbound policy: {host} resolves to {refused[0]}, which is not allowed"
            )
    return [str(a) for a in dict.fromkeys(addresses)]


class _PinnedBackend(httpcore.SyncBackend):
    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in vetted_addresses(self.policy, host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"cannot connect to {host}")


class _AsyncPinnedBackend(httpcore.AnyIOBackend):
    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await anyio.to_thread.run_sync(vetted_addresses, self.policy, host, port):
            try:
                return await super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"cannot connect to {host}")


def policy_transport(policy: OutboundPolicy | None = None, **options: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` whose connections obey the outbound policy (from the environment by default)."""
    transport = httpx.HTTPTransport(**options)
    # httpx builds its httpcore pool without a way to pass a network backend; set the pool's.
    transport._pool._network_backend = _PinnedBackend(policy or OutboundPolicy.from_env())
    return transport


def async_policy_transport(policy: OutboundPolicy | None = None, **options: Any) -> httpx.AsyncHTTPTransport:
    """The async twin of ``policy_transport``."""
    transport = httpx.AsyncHTTPTransport(**options)
    transport._pool._network_backend = _AsyncPinnedBackend(policy or OutboundPolicy.from_env())
    return transport
