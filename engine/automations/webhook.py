"""Calling a webhook: one signed JSON POST to a URL a consultant or an admin typed in.

A webhook URL is input the server acts on, so it is treated as hostile: the server must
not become a way into the network it runs in (SSRF). `check_target` allows only http and
https, resolves the host once and refuses the URL when any of its addresses is not on the
public internet — loopback, private, link-local, shared, unique-local, multicast,
reserved, an IPv6 address embedding such an IPv4 — whatever spelling the URL used for it
(`2130706433`, `0x7f.1`, `a@127.0.0.1`, `localhost.`). `post` then connects to exactly the
addresses it checked, so a DNS answer that changes between the check and the connection
(rebinding) changes nothing, and it never follows a redirect. Receivers on the private
network (on-premises, tests) are allowed explicitly: `KARTOTEKA_WEBHOOK_ALLOW`.

Delivery is at least once: the worker retries what failed with a retryable
`DeliveryFailed`, so a receiver may see an event twice and dedupes on
`X-Kartoteka-Event`. `X-Kartoteka-Signature` proves the body came from us: see `verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import SplitResult, quote, urlsplit

from engine.automations.channels import DeliveryFailed
from engine.errors import SettingsError

__all__ = ["ALLOW_ENV", "DeliveryFailed", "TargetRefused", "allowed_from_env", "check_target",
           "post", "refusal", "sign", "verify"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV = "KARTOTEKA_WEBHOOK_ALLOW"
MAX_RESPONSE = 64 * 1024  # bytes of a receiver's answer read at most; the rest is dropped
USER_AGENT = "Kartoteka"

_ALLOW_HINT = (f"to call a receiver on your own network (on-premises, tests), add its host name, "
               f"IP or network to {ALLOW_ENV}, e.g. {ALLOW_ENV}=hooks.internal,10.20.0.0/16")

# Names that mean this machine whatever DNS says (RFC 6761 reserves all of *.localhost).
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")

# inet_aton also reads 1 to 4 parts in decimal, octal (leading 0) or hex (0x): `2130706433`,
# `0177.1`, `0x7f.0.0.1` are all 127.0.0.1 to the resolver, so they are read the same here.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

# IANA special-purpose blocks the ipaddress properties miss or that changed between Python
# versions; listed so the rule does not depend on the interpreter.
_SPECIAL: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why) for net, why in (
        ("0.0.0.0/8", "'this network'"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("240.0.0.0/4", "reserved"),
        ("100::/64", "discard-only"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("2001::/23", "IETF protocol assignments (Teredo and others)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique-local"),
        ("fec0::/10", "site-local"),
    ))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_URL_SAFE = "/%:@!$&'()*+,;="  # kept as written; anything else outside ASCII is percent-encoded
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class TargetRefused(DeliveryFailed):
    """A webhook URL may not be called: not http(s), or its host is (or resolves to) an
    address off the public internet. Never retryable; the message says why and how to
    allow the receiver (`KARTOTEKA_WEBHOOK_ALLOW`) when it is meant to be internal."""

    def __init__(self, url: str, reason: str, hint: str = _ALLOW_HINT):
        super().__init__(f"webhook URL {url!r} refused: {reason}; {hint}", retryable=False)
        self.url = url
        self.reason = reason


# --- the target ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    url: str
    https: bool
    host: str        # lower case, ASCII (IDNA), no brackets, no trailing dot
    port: int
    path: str        # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str) -> _Target:
        if not isinstance(url, str) or not url:
            raise TargetRefused(repr(url), "not a URL", "write an absolute http(s) URL")
        if any(ch <= " " or ch in "\\\x7f" for ch in url):
            raise TargetRefused(url, "spaces, control characters or backslashes in the URL",
                                "percent-encode them in the path or query")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise TargetRefused(url, f"not a valid URL ({error})",
                                "write scheme://host[:port]/path") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise TargetRefused(url, f"scheme {scheme or '(none)'!r} is not http or https",
                                "webhooks are called over https (or http)")
        if "@" in parts.netloc:
            raise TargetRefused(url, "user name or password in the URL",
                                "remove them: the receiver authenticates us by the signature")
        host = _ascii_host(url, parts)
        path = quote(parts.path or "/", safe=_URL_SAFE) + (
            f"?{quote(parts.query, safe=_URL_SAFE + '?')}" if parts.query else "")
        return cls(url, scheme == "https", host, port or (443 if scheme == "https" else 80), path)


def _ascii_host(url: str, parts: SplitResult) -> str:
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused(url, "no host", "write scheme://host[:port]/path")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise TargetRefused(url, f"host {host!r} is not a valid domain name ({error})",
                            "check the spelling of the host") from None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a resolver would read from a numeric host in any inet_aton
    spelling, None for a host that is not numeric; ValueError when numeric but invalid."""
    if ":" in host:
        return None  # IPv6
    invalid = ValueError(f"{host!r} is numeric but not a valid IPv4 address")
    if not _NUMERIC_HOST.match(host):
        if _NUMERIC_LABEL.match(host.rpartition(".")[2]):
            raise invalid  # `1.2.3.4.5`: a name cannot end in a number (WHATWG URL)
        return None
    numbers = []
    for part in host.split("."):
        try:
            if part.startswith("0x"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part))
        except ValueError:
            raise invalid from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise invalid
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _literal(target: _Target) -> Address | None:
    try:
        numeric = _inet_aton(target.host)
    except ValueError as error:
        raise TargetRefused(target.url, str(error), "write a host name or a dotted IPv4 address") from None
    if numeric is not None:
        return numeric
    try:
        return ipaddress.ip_address(target.host)
    except ValueError:
        if ":" in target.host or "%" in target.host:
            raise TargetRefused(target.url, f"{target.host!r} is not a valid IPv6 address",
                                "write [2001:db8::1] without a zone") from None
        return None


# --- the address rules ------------------------------------------------------------------

def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: Address) -> str | None:
    """Why a connection to `ip` is refused (what kind of address it is), None when it is
    on the public internet."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (zone) IPv6 address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            kind, ipv4 = embedded
            if kind == "IPv4-compatible":
                return f"an IPv4-compatible IPv6 address (deprecated) of {ipv4}"
            why = refusal(ipv4)
            return f"an IPv6 address embedding {ipv4} ({kind}), {why}" if why else None
    for test, why in ((ip.is_unspecified, "unspecified"), (ip.is_loopback, "loopback"),
                      (ip.is_link_local, "link-local"), (ip.is_multicast, "multicast")):
        if test:
            return why
    for net, why in _SPECIAL:
        if ip.version == net.version and ip in net:
            return why
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    return None


# --- the allow-list ---------------------------------------------------------------------

@dataclass(frozen=True)
class _AllowList:
    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str], source: str = "allowed") -> _AllowList:
        names: set[str] = set()
        networks: list[Network] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(_unmapped(ipaddress.ip_network(entry.strip("[]"), strict=False)))
                continue
            except ValueError:
                pass
            if not entry.isascii():
                try:
                    entry = entry.encode("idna").decode("ascii")
                except UnicodeError:
                    pass  # refused just below
            if "/" in entry or not re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", entry):
                raise SettingsError(
                    f"{source}: {raw!r} is not a host name, an IP address or a network; "
                    f"write e.g. hooks.internal, 10.0.0.7 or 10.20.0.0/16")
            names.add(entry)
        return cls(frozenset(names), tuple(networks))

    def covers(self, ip: Address) -> bool:
        candidates: list[Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == net.version and c in net for c in candidates for net in self.networks)


def _unmapped(network: Network) -> Network:
    """`::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8 written in IPv6."""
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(mapped):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def allowed_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The allow-list from `KARTOTEKA_WEBHOOK_ALLOW`: comma-separated host names, IP
    addresses and networks (CIDR) a webhook may call although they are not public.
    Empty when unset. Raises SettingsError for an entry that is none of those."""
    value = (os.environ if environ is None else environ).get(ALLOW_ENV, "")
    entries = tuple(entry.strip() for entry in value.split(",") if entry.strip())
    _AllowList.parse(entries, ALLOW_ENV)
    return entries


# --- checking -------------------------------------------------------------------------

def check_target(url: str, allowed: Sequence[str] = ()) -> list[Address]:
    """The addresses a webhook to `url` may connect to, after the SSRF rules.

    Raises TargetRefused when the URL is not http(s), carries a user name, names a
    localhost host, or when ANY address the host resolves to is not public (see
    `refusal`), unless the host name is in `allowed` or each such address lies in one of
    its networks. A host that does not resolve raises a retryable DeliveryFailed (DNS may
    come back). Resolves once: connect to the returned addresses, not to the name again.
    An `allowed` entry that is not a host name, IP address or network raises SettingsError.
    """
    return _check(_Target.parse(url), _AllowList.parse(allowed))


def _check(target: _Target, allow: _AllowList) -> list[Address]:
    literal = _literal(target)
    named_allowed = target.host in allow.names
    if literal is None and not named_allowed and (
            target.host in _LOCAL_NAMES or target.host.endswith(".localhost")):
        raise TargetRefused(target.url, f"{target.host!r} is this machine")
    addresses = [literal] if literal is not None else _resolve(target)
    if named_allowed:
        return addresses
    for ip in addresses:
        why = None if allow.covers(ip) else refusal(ip)
        if why:
            if literal is None:
                detail = f"{target.host!r} resolves to {ip}, {why}"
            elif str(ip) == target.host:
                detail = f"{target.host} is {why}"
            else:
                detail = f"{target.host!r} is {ip}, {why}"
            raise TargetRefused(target.url, detail)
    return addresses


def _resolve(target: _Target) -> list[Address]:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise DeliveryFailed(f"webhook host {target.host!r} does not resolve ({error}); "
                             f"check the URL {target.url!r}", retryable=True) from None
    addresses: list[Address] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]))
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise DeliveryFailed(f"webhook host {target.host!r} has no address", retryable=True)
    return addresses


# --- signing ----------------------------------------------------------------------------

def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Kartoteka-Signature` value: `t=<timestamp>,v1=<hex HMAC-SHA256>` over
    `b"<timestamp>." + body` with the subscription's secret."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, *, now: float, tolerance: int = 300) -> bool:
    """For receivers: whether `header` (X-Kartoteka-Signature) signs `body` with `secret`
    and was made within `tolerance` seconds of `now` (a replay of an old request fails).
    Several `v1=` values are accepted (any may match); a malformed header is False, never
    an exception. `body` must be the raw bytes received, before any JSON parsing."""
    timestamp: int | None = None
    macs: list[str] = []
    for item in str(header).split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            macs.append(value)
    if timestamp is None or not macs or abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")) for mac in macs)


# --- posting ----------------------------------------------------------------------------

def post(url: str, body: bytes, *, secret: bytes | None, event_id: str, allowed: Sequence[str] = (),
         timeout: float = 10.0, deadline: float = 30.0, context: ssl.SSLContext | None = None) -> int:
    """POST `body` (JSON) to `url` once; the 2xx status on success.

    Checks the URL (`check_target`), connects to the checked addresses only, sends the
    URL's host as Host and TLS SNI, verifies the certificate (`context`: the default one
    of the ssl module unless a caller trusts a private CA), signs the body when `secret` is
    given, never follows a redirect and reads at most 64 KB of the answer. `timeout` bounds
    each network step, `deadline` the whole call in seconds: a receiver that trickles its
    answer a byte at a time cannot hold a worker longer. Raises TargetRefused, or
    DeliveryFailed with `retryable` set.
    """
    if any(ch in event_id for ch in "\r\n\0"):
        raise ValueError("event_id must not contain line breaks")
    target = _Target.parse(url)
    addresses = _check(target, _AllowList.parse(allowed))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Kartoteka-Event": event_id}
    if secret is not None:
        headers["X-Kartoteka-Signature"] = sign(secret, int(time.time()), body)
    connection = _connection(target, addresses, timeout, time.monotonic() + deadline, context)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        with connection.getresponse() as response:
            answer = response.read(MAX_RESPONSE)
            status, answer_headers = response.status, response.headers
    except (OSError, http.client.HTTPException) as error:
        raise DeliveryFailed(f"webhook {url!r} could not be reached: {_describe(error)}",
                             retryable=True) from None
    finally:
        connection.close()
    return _judge(url, status, answer_headers, answer)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _judge(url: str, status: int, headers: Any, answer: bytes) -> int:
    if 200 <= status < 300:
        return status
    said = answer[:200].decode("utf-8", "replace").strip()
    said = f": {said}" if said else ""
    if 300 <= status < 400:
        location = headers.get("Location") or "(no Location)"
        raise DeliveryFailed(
            f"webhook {url!r} answered {status}, a redirect to {location}; redirects are not "
            f"followed: set the webhook's URL to the final address", retryable=False, status=status)
    retryable = status >= 500 or status in (408, 429)
    raise DeliveryFailed(f"webhook {url!r} answered {status}{said}", retryable=retryable,
                         status=status, retry_after=_retry_after(headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else None


def _connection(target: _Target, addresses: list[Address], timeout: float, deadline: float,
                context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if target.https:
        return _PinnedHTTPSConnection(target.host, target.port, addresses, timeout, deadline,
                                      context or ssl.create_default_context())
    return _PinnedHTTPConnection(target.host, target.port, addresses, timeout, deadline)


def _remaining(deadline: float, timeout: float | None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the receiver did not answer within the deadline")
    return left if timeout is None else min(left, timeout)


def _open_socket(addresses: list[Address], port: int, timeout: float | None,
                 deadline: float) -> socket.socket:
    """A TCP connection to the first of `addresses` that answers: no name lookup here."""
    last: OSError = OSError("no address to connect to")
    for ip in addresses:
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_remaining(deadline, timeout))
            sock.connect((str(ip), port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as error:
            sock.close()
            last = error
    raise last


class _DeadlineReader(io.RawIOBase):
    """What http.client reads the answer from: each read waits at most until the deadline.
    Reads through the socket's own file, which keeps the socket open while it is read."""

    def __init__(self, sock: socket.socket, timeout: float | None, deadline: float):
        super().__init__()
        self.sock, self.timeout, self.deadline = sock, timeout, deadline
        self.raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self.sock.settimeout(_remaining(self.deadline, self.timeout))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _DeadlineSocket:
    """The connection's socket, except that the answer is read through a _DeadlineReader."""

    def __init__(self, sock: socket.socket, timeout: float | None, deadline: float):
        self.sock, self.timeout, self.deadline = sock, timeout, deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.timeout, self.deadline))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked addresses, never to the host name again (rebinding)."""

    def __init__(self, host: str, port: int, addresses: list[Address], timeout: float, deadline: float):
        super().__init__(host, port, timeout=timeout)
        self.addresses, self.deadline = addresses, deadline

    def connect(self) -> None:
        sock = _open_socket(self.addresses, self.port, self.timeout, self.deadline)
        self.sock = cast(socket.socket, _DeadlineSocket(sock, self.timeout, self.deadline))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked addresses, with the URL's host as SNI and certificate name."""

    def __init__(self, host: str, port: int, addresses: list[Address], timeout: float, deadline: float,
                 context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.addresses, self.deadline = addresses, deadline
        self.pinned_context = context

    def connect(self) -> None:
        sock = _open_socket(self.addresses, self.port, self.timeout, self.deadline)
        try:
            sock.settimeout(_remaining(self.deadline, self.timeout))
            secure = self.pinned_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = cast(socket.socket, _DeadlineSocket(secure, self.timeout, self.deadline))
