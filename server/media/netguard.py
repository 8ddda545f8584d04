"""Pure SSRF rules: which URLs may be fetched and which IP addresses may be connected to.

No I/O here. ``server.media.resolver`` resolves names and vets every answer with ``vet_address``;
``server.media.fetch`` connects only to those vetted answers. Rules (issue "Security and
reliability", item 1): http/https only, allowed ports only, no userinfo, canonical hosts only,
and every address public after unwrapping the IPv6 forms that embed an IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from yarl import URL

from server import limits
from server.errors import BadRequest, UnmaskError

IPAddress = IPv4Address | IPv6Address


class FetchRefused(BadRequest):
    """A URL or redirect was refused by an SSRF rule; nothing was sent to the refused address."""

    code = "url_refused"


class FetchFailed(UnmaskError):
    """The upstream server could not be reached or did not answer usefully (timeout, HTTP error)."""

    status, code = 502, "fetch_failed"


def _refuse(rule: str, message: str) -> FetchRefused:
    """A FetchRefused naming the rule, so API clients and logs can tell rules apart."""
    return FetchRefused(message, rule=rule)


@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may do; ``allow_hosts`` lets exact (ip, port) pairs past the public-address rule."""

    allowed_ports: frozenset[int] = limits.FETCH_ALLOWED_PORTS
    allow_hosts: frozenset[tuple[IPAddress, int]] = field(default_factory=frozenset)
    max_redirects: int = limits.FETCH_MAX_REDIRECTS
    max_bytes: int = limits.FETCH_MAX_BYTES
    connect_timeout: float = limits.FETCH_CONNECT_TIMEOUT_S
    read_timeout: float = limits.FETCH_READ_TIMEOUT_S
    total_timeout: float = limits.FETCH_TOTAL_TIMEOUT_S

    def __post_init__(self) -> None:
        # Accept "127.0.0.1"-style strings from settings, but compare parsed addresses only.
        pairs = frozenset((ipaddress.ip_address(ip), int(port)) for ip, port in self.allow_hosts)
        object.__setattr__(self, "allow_hosts", pairs)
        object.__setattr__(self, "allowed_ports", frozenset(int(p) for p in self.allowed_ports))
        if self.max_redirects < 0 or self.max_bytes <= 0:
            raise ValueError("max_redirects must be >= 0 and max_bytes > 0")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be positive")


# Checked in addition to ``not is_global`` on every interpreter. CPython before 3.11.10/3.12.4
# (CVE-2024-4032) misclassifies several ranges; measured on this 3.11.7: is_global is True for
# 224.0.0.0/4 (multicast, every version), 192.88.99.0/24, 64:ff9b:1::/48, 2002::/16, fec0::/10,
# ff00::/8, 3fff::/20, 5f00::/16 and IPv4-compatible ::a.b.c.d (so ::127.0.0.1 looked public).
# The whole list is spelled out so the rule does not depend on the interpreter at all.
_BLOCKED_V4 = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux (CVE-2025-24354)
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT: neither private nor global in ipaddress
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata at 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments (incl. 192.0.0.170 NAT64 discovery)
        "192.0.2.0/24",
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
    )
)
_BLOCKED_V6 = tuple(
    IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped (unwrapped and vetted as IPv4 before this list is used)
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32
        "2001:db8::/32",
        "2002::/16",  # 6to4
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64_WKP = IPv6Network("64:ff9b::/96")
_COMPAT = IPv6Network("::/96")


def _not_public(ip: IPAddress) -> bool:
    """True when ``ip`` is not a plain public unicast address."""
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return True
    if ip.is_loopback or ip.is_link_local or ip.is_private:
        return True
    blocked = _BLOCKED_V4 if ip.version == 4 else _BLOCKED_V6
    return any(ip in net for net in blocked)


def vet_ip(ip: IPAddress | str) -> None:
    """Raise FetchRefused unless ``ip`` (after unwrapping embedded IPv4) is a public unicast address."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, IPv6Address):
        if addr.scope_id:
            raise _refuse("address", f"address {addr} has a zone index; not accepted")
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            kind, inner, translated = embedded
            if not translated:
                raise _refuse("address", f"address {addr} is a {kind} address (embeds {inner}); not accepted")
            if _not_public(inner):
                raise _refuse("address", f"address {addr} is not public (it embeds {inner})")
            return
    if _not_public(addr):
        raise _refuse("address", f"address {addr} is not public")


def _embedded_ipv4(addr: IPv6Address) -> tuple[str, IPv4Address, bool] | None:
    """(kind, embedded IPv4, whether traffic goes straight to it) for the IPv6 forms that embed one."""
    if addr.ipv4_mapped is not None:
        return "IPv4-mapped", addr.ipv4_mapped, True
    if addr in _NAT64_WKP:
        # DNS64 networks answer AAAA 64:ff9b::a.b.c.d for IPv4-only sites: legitimate when public.
        return "NAT64", IPv4Address(int(addr) & 0xFFFFFFFF), True
    if addr.sixtofour is not None:
        return "6to4 tunnel", addr.sixtofour, False
    if addr.teredo is not None:
        return "Teredo tunnel", addr.teredo[1], False
    if addr in _COMPAT and int(addr) > 1:
        return "deprecated IPv4-compatible", IPv4Address(int(addr) & 0xFFFFFFFF), False
    return None


def vet_address(ip: IPAddress, port: int, policy: FetchPolicy) -> None:
    """Raise FetchRefused unless connecting to (ip, port) is allowed by ``policy``."""
    if (ip, port) in policy.allow_hosts:
        return
    if port not in policy.allowed_ports:
        raise _refuse("port", f"port {port} is not allowed (allowed: {_ports(policy)})")
    vet_ip(ip)


def _ports(policy: FetchPolicy) -> str:
    """The allowed ports for messages."""
    return ", ".join(str(p) for p in sorted(policy.allowed_ports)) or "none"


@dataclass(frozen=True)
class ParsedURL:
    """A URL that passed every syntactic rule; ``ip`` is set when the host is an address literal."""

    url: URL
    scheme: str
    host: str
    port: int
    ip: IPAddress | None

    def __str__(self) -> str:
        return str(self.url)


_SCHEMES = frozenset({"http", "https"})
# A label that WHATWG (and inet_aton) would read as a number: decimal, octal or hex.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# Control characters, whitespace and backslashes are read differently by different URL parsers
# (browsers treat "\" as "/"; some strip tabs inside the host); refusing them removes the ambiguity.
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]")


def parse_and_vet_url(url: str, policy: FetchPolicy, base: URL | None = None) -> ParsedURL:
    """Parse ``url`` (relative to ``base`` for redirects) and apply every rule that needs no DNS."""
    if len(url) > limits.FETCH_MAX_URL_CHARS:
        raise _refuse("url", f"URL is longer than {limits.FETCH_MAX_URL_CHARS} characters")
    if _AMBIGUOUS.search(url):
        raise _refuse("url", "URL contains whitespace, control characters or a backslash")
    try:
        parsed = URL(url)
        if base is not None:
            parsed = base.join(parsed)
    except (ValueError, TypeError) as exc:
        raise _refuse("url", f"URL is not valid: {exc}") from exc
    scheme = parsed.scheme.lower()
    if scheme not in _SCHEMES:
        raise _refuse("scheme", f"scheme {scheme or '(none)'!r} is not http(s)")
    # yarl drops an empty userinfo ("http://@host/"), so look at the authority as written too.
    netloc = urlsplit(str(parsed)).netloc
    if "@" in netloc or "@" in urlsplit(url).netloc or parsed.raw_user or parsed.raw_password:
        raise _refuse("userinfo", "credentials in URLs are not accepted")
    host = parsed.raw_host
    if not host:
        raise _refuse("host", "URL has no host")
    port = parsed.port
    if port is None:
        raise _refuse("port", "URL has no port for its scheme")
    # yarl reads "[v1.x]" (an IPvFuture literal) as the name v1.x: brackets must hold IPv6.
    ip = _host_ip(host, bracketed=netloc.startswith("[") or "[" in urlsplit(url).netloc)
    if ip is not None:
        vet_address(ip, port, policy)
    elif port not in policy.allowed_ports and all(p != port for _, p in policy.allow_hosts):
        raise _refuse("port", f"port {port} is not allowed (allowed: {_ports(policy)})")
    # Rebuilt from the vetted parts (no userinfo, no fragment) so nothing re-parses the original.
    authority = f"[{host}]" if ip is not None and ip.version == 6 else host
    if port != _default_port(scheme):
        authority += f":{port}"
    query = f"?{parsed.raw_query_string}" if parsed.raw_query_string else ""
    clean = URL(f"{scheme}://{authority}{parsed.raw_path or '/'}{query}", encoded=True)
    return ParsedURL(url=clean, scheme=scheme, host=host, port=port, ip=ip)


def _default_port(scheme: str) -> int:
    """80 for http, 443 for https."""
    return 443 if scheme == "https" else 80


def _host_ip(host: str, *, bracketed: bool) -> IPAddress | None:
    """The address of an IP-literal host, None for a valid DNS name; refuse anything ambiguous."""
    if bracketed or ":" in host:
        if "%" in host:
            raise _refuse("host", f"IPv6 zone index in host {host!r} is not accepted")
        try:
            return IPv6Address(host)
        except ValueError as exc:
            raise _refuse("host", f"host [{host}] is not a valid IPv6 address") from exc
    labels = host.split(".")
    last = labels[-1] or (labels[-2] if len(labels) > 1 else "")
    if _NUMERIC_LABEL.fullmatch(last):
        # A host ending in a number is an IPv4 address to browsers and to inet_aton (which reads
        # 2130706433, 0x7f.1, 0177.0.0.1 and 127.1 as 127.0.0.1): only the dotted-quad spelling is allowed.
        if _CANONICAL_V4.fullmatch(host):
            return IPv4Address(host)
        raise _refuse(
            "host", f"numeric host {host!r} is not a canonical dotted-quad IPv4 address (like 93.184.216.34)"
        )
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise _refuse("host", f"host {host!r} is not a valid DNS name")
    return None
