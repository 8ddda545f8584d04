"""Name resolution for the fetcher: resolve once, vet every answer, hand back only vetted addresses.

The connector connects to exactly the list ``resolve_vetted`` returns, so the addresses that were
checked are the addresses used (no second lookup that DNS rebinding could answer differently).
Tests inject ``StaticResolver`` so no query or packet ever leaves the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Protocol

from server.media.netguard import FetchFailed, FetchPolicy, FetchRefused, IPAddress, vet_address


class Resolver(Protocol):
    """Anything that maps a host name to its A and AAAA addresses."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """All addresses of ``host`` (may be empty); raise FetchFailed when the lookup fails."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), asking for IPv4 and IPv6 at once."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """A and AAAA answers of ``host``, de-duplicated, in the resolver's order."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchFailed(f"could not resolve host {host!r}: {exc}", host=host) from exc
        # sockaddr[0] keeps an IPv6 zone ("fe80::1%eth0"); ip_address keeps it too, and vetting refuses it.
        return _unique(ipaddress.ip_address(info[4][0]) for info in infos if info[0] in _FAMILIES)


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class StaticResolver:
    """A fixed name -> addresses table (tests, pinned hosts); unknown names fail, nothing is queried."""

    def __init__(self, table: Mapping[str, Iterable[str | IPAddress]]) -> None:
        self._table = {
            _key(name): [ipaddress.ip_address(a) if isinstance(a, str) else a for a in addrs]
            for name, addrs in table.items()
        }
        self.queries: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The table's addresses for ``host``; FetchFailed when it has none."""
        self.queries.append(host)
        try:
            return list(self._table[_key(host)])
        except KeyError:
            message = f"could not resolve host {host!r}: not in the static table"
            raise FetchFailed(message, host=host) from None


def _key(name: str) -> str:
    """Names compare case-insensitively and without the root dot."""
    return name.lower().rstrip(".")


def _unique(addrs: Iterable[IPAddress]) -> list[IPAddress]:
    """Addresses in first-seen order without repeats."""
    return list(dict.fromkeys(addrs))


async def resolve_vetted(host: str, port: int, policy: FetchPolicy, resolver: Resolver) -> list[IPAddress]:
    """Addresses to connect to for (host, port): all answers must pass ``vet_address``, else refuse."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addrs = [literal] if literal is not None else await resolver.resolve(host, port)
    if not addrs:
        raise FetchFailed(f"host {host!r} has no addresses", host=host)
    for addr in addrs:
        try:
            vet_address(addr, port, policy)
        except FetchRefused as exc:
            if literal is not None:
                raise
            # One bad answer refuses the host: a name that also points inside is hostile.
            message = f"host {host!r} resolves to a refused address: {exc.message}"
            raise FetchRefused(message, **exc.details) from None
    return addrs
