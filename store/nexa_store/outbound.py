"""One outbound policy for every URL Nexa calls on a user's behalf.

Teacher endpoints, judge endpoints, and (later) S3 endpoints and webhooks all go
through ``check_url`` before a request is made. By default any public address is
allowed and every non-public one is refused: loopback, private (RFC 1918, ULA),
link-local (the cloud metadata service lives there), CGNAT, multicast and
reserved ranges — the addresses a server-side request forgery goes for.

``NEXA_OUTBOUND_ALLOWLIST`` (comma-separated) lists what is allowed besides:
host names (``api.example.com``, ``*.example.com``) and networks
(``10.1.0.0/16``, ``127.0.0.1``). ``NEXA_OUTBOUND_ONLY_ALLOWLIST=1`` turns the
policy into allowlist-only: public addresses outside the list are refused too.
``nexa up`` allows loopback, since it serves one user on their own machine.

A name is checked as written at submit (no lookup there) and again, resolved,
just before the job calls it; every address it resolves to must pass. The HTTP
clients then connect through ``outbound_transport``, which checks the addresses
again at each connection and connects only to a vetted one (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from nexa_store.access import AccessDenied

ENV_ALLOWLIST = "NEXA_OUTBOUND_ALLOWLIST"
ENV_KEY_ENVS = "NEXA_OUTBOUND_KEY_ENVS"
_KEY_ENV_RE = re.compile(r"^[A-Z][A-Z0-9_]*_API_KEY$")
ENV_ONLY_ALLOWLIST = "NEXA_OUTBOUND_ONLY_ALLOWLIST"
LOOPBACK_ALLOWLIST = "127.0.0.0/8,::1,localhost"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class OutboundPolicy:
    hosts: tuple[str, ...] = ()  # exact names, or "*.suffix"
    networks: tuple[IPNetwork, ...] = ()
    only_allowlist: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OutboundPolicy:
        env = os.environ if env is None else env
        hosts: list[str] = []
        networks: list[IPNetwork] = []
        for item in (env.get(ENV_ALLOWLIST) or "").split(","):
            entry = item.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.append(entry.rstrip("."))
        only = (env.get(ENV_ONLY_ALLOWLIST) or "").strip().lower() in ("1", "true", "yes")
        return cls(tuple(hosts), tuple(networks), only)

    def host_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.hosts:
            if entry.startswith("*.") and host.endswith(entry[1:]):
                return True
            if host == entry:
                return True
        return False

    def address_listed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def is_public(address: IPAddress) -> bool:
    """True for globally routable unicast addresses only (IPv4 inside IPv6 judged as the IPv4 it carries)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if address in _NAT64_LOCAL:
            return False
    return address.is_global and not address.is_multicast


def _deny(url: str, why: str) -> AccessDenied:
    return AccessDenied(
        "url_not_allowed",
        f"{url}: {why}; an operator can allow it with {ENV_ALLOWLIST}",
    )


def address_allowed(policy: OutboundPolicy, address: IPAddress) -> bool:
    """Listed by the allowlist, or public (unless the policy is allowlist-only)."""
    if policy.address_listed(address):
        return True
    return not policy.only_allowlist and is_public(address)


def check_url(url: str, *, resolve: bool = False, policy: OutboundPolicy | None = None) -> str:
    """Return ``url`` if the policy lets Nexa call it; ``AccessDenied(url_not_allowed)`` otherwise.

    With ``resolve``, a host name is looked up and every address must pass; a name
    that does not resolve passes here (the call itself then fails with its own error).
    """
    policy = policy or OutboundPolicy.from_env()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AccessDenied("url_not_allowed", f"{url}: only http(s) URLs with a host are called")
    if parts.username or parts.password:
        raise AccessDenied(
            "url_not_allowed", f"{parts.scheme}://…@{parts.hostname}: credentials in URLs are refused"
        )
    host = parts.hostname
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not address_allowed(policy, literal):
            raise _deny(url, f"{literal} is not a public address")
        return url
    if policy.host_listed(host):
        return url
    if is_localhost_name(host):
        if not address_allowed(policy, ipaddress.ip_address("127.0.0.1")):
            raise _deny(url, "localhost is not a public address")
        return url
    if policy.only_allowlist and not resolve:
        raise _deny(url, f"{host} is not on the allowlist")
    if resolve:
        addresses = resolved_addresses(host, parts.port)
        if not addresses and policy.only_allowlist:
            raise _deny(url, f"{host} does not resolve to an allowed address")
        for address in addresses:
            if not address_allowed(policy, address):
                raise _deny(url, f"{host} resolves to {address}, which is not allowed")
    return url


def is_localhost_name(host: str) -> bool:
    """Names that mean this machine whatever DNS says (RFC 6761)."""
    name = host.lower().rstrip(".")
    return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def resolved_addresses(host: str, port: int | None) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_key_env_name(name: str) -> None:
    """Only ``<NAME>_API_KEY`` variables, never Nexa's or the cloud's own secrets, name a key to send."""
    if not _KEY_ENV_RE.match(name) or name.startswith(("NEXA_", "AWS_")):
        raise AccessDenied(
            "key_env_not_allowed",
            f"{name}: a key variable must be named <PROVIDER>_API_KEY (and not NEXA_… or AWS_…)",
        )


def key_for_url(
    env_name: str | None, url: str, *, official_url: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The API key in worker variable ``env_name`` if it may be sent to ``url``; ``AccessDenied`` otherwise.

    Every key in a worker's environment is the platform's, not the tenant's. It goes
    to its provider's own endpoint (``official_url``); to any other URL a user named
    only when the operator lists the variable in ``NEXA_OUTBOUND_KEY_ENVS``, since a
    user-chosen base URL would otherwise receive it.
    """
    if not env_name:
        return None
    env = os.environ if env is None else env
    check_key_env_name(env_name)
    allowed = {n.strip() for n in (env.get(ENV_KEY_ENVS) or "").split(",") if n.strip()}
    if (official_url is None or url.rstrip("/") != official_url.rstrip("/")) and env_name not in allowed:
        raise AccessDenied(
            "key_env_not_allowed",
            f"{env_name} is sent only to its provider's own endpoint, not to {url}; an operator can allow "
            f"it for other endpoints with {ENV_KEY_ENVS}",
        )
    return env.get(env_name)
