"""The SSRF corpus: every case is refused, and the canary on loopback sees zero connections.

Addresses outside loopback are only ever given to the pure vetting functions and to
``resolve_vetted`` with a StaticResolver: nothing here can connect to them. End-to-end cases
go through the whole Fetcher against the canary, spelled in every way we know.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote

import pytest
from yarl import URL

from server.errors import BadRequest
from server.media import fetch as fetch_module
from server.media.fetch import Fetcher, _VettingConnector
from server.media.netguard import (
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    ParsedURL,
    parse_and_vet_url,
    vet_address,
    vet_ip,
)
from server.media.resolver import StaticResolver, resolve_vetted
from tests.security.conftest import Canary, ConnectLog

# -- 1. addresses: refused by vet_ip without any I/O --------------------------------------------

REFUSED_ADDRESSES = [
    pytest.param("10.0.0.1", id="rfc1918-10"),
    pytest.param("172.16.0.1", id="rfc1918-172.16"),
    pytest.param("172.31.255.255", id="rfc1918-172.31"),
    pytest.param("192.168.1.1", id="rfc1918-192.168"),
    pytest.param("169.254.169.254", id="cloud-metadata"),
    pytest.param("169.254.0.1", id="link-local-v4"),
    pytest.param("100.64.0.1", id="cgnat-low"),
    pytest.param("100.127.255.254", id="cgnat-high"),
    pytest.param("0.0.0.0", id="unspecified-v4"),
    pytest.param("0.1.2.3", id="this-network"),
    pytest.param("127.0.0.1", id="loopback-v4"),
    pytest.param("127.255.255.254", id="loopback-v4-high"),
    pytest.param("192.0.0.1", id="ietf-protocol-192.0.0"),
    pytest.param("192.0.0.170", id="nat64-discovery"),
    pytest.param("192.0.2.1", id="test-net-1"),
    pytest.param("198.18.0.1", id="benchmarking"),
    pytest.param("198.51.100.7", id="test-net-2"),
    pytest.param("203.0.113.9", id="test-net-3"),
    pytest.param("192.88.99.1", id="6to4-relay-anycast"),
    pytest.param("224.0.0.251", id="multicast-v4"),
    pytest.param("239.255.255.250", id="multicast-ssdp"),
    pytest.param("240.0.0.1", id="reserved-240"),
    pytest.param("255.255.255.255", id="broadcast"),
    pytest.param("::", id="unspecified-v6"),
    pytest.param("::1", id="loopback-v6"),
    pytest.param("::ffff:10.0.0.1", id="mapped-rfc1918"),
    pytest.param("::ffff:169.254.169.254", id="mapped-metadata"),
    pytest.param("::ffff:127.0.0.1", id="mapped-loopback"),
    pytest.param("::ffff:0:a9fe:a9fe", id="ipv4-translated-metadata"),
    pytest.param("::a9fe:a9fe", id="ipv4-compatible-metadata"),
    pytest.param("::127.0.0.1", id="ipv4-compatible-loopback"),
    pytest.param("64:ff9b::a9fe:a9fe", id="nat64-metadata"),
    pytest.param("64:ff9b::7f00:1", id="nat64-loopback"),
    pytest.param("64:ff9b::a00:1", id="nat64-rfc1918"),
    pytest.param("64:ff9b:1::a00:1", id="nat64-local-use"),
    pytest.param("2002:a9fe:a9fe::1", id="6to4-metadata"),
    pytest.param("2002:7f00:1::1", id="6to4-loopback"),
    pytest.param("2002:808:808::1", id="6to4-public-tunnel"),
    pytest.param("2001:0:4136:e378:8000:63bf:3fff:fdd2", id="teredo"),
    pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", id="teredo-client-127.0.0.1"),
    pytest.param("fc00::1", id="ula-fc"),
    pytest.param("fd00:ec2::254", id="aws-metadata-v6"),
    pytest.param("fe80::1", id="link-local-v6"),
    pytest.param("fe80::1%eth0", id="link-local-v6-zone"),
    pytest.param("fec0::1", id="site-local-v6"),
    pytest.param("ff02::1", id="multicast-v6"),
    pytest.param("100::1", id="discard-only"),
    pytest.param("2001:db8::1", id="documentation-v6"),
    pytest.param("3fff::1", id="documentation-v6-new"),
    pytest.param("5f00::1", id="srv6-sids"),
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_vet_ip_refuses(address: str) -> None:
    with pytest.raises(FetchRefused) as info:
        vet_ip(address)
    assert info.value.details["rule"] == "address"
    assert "not public" in info.value.message or "not accepted" in info.value.message


# Including the two embedded forms whose IPv4 is public (DNS64 networks hand out 64:ff9b::/96).
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2001:4860:4860::8888"]
PUBLIC_ADDRESSES += ["::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(
    "address",
    PUBLIC_ADDRESSES,
)
def test_vet_ip_accepts_public(address: str) -> None:
    vet_ip(address)


def test_embedded_address_is_named() -> None:
    with pytest.raises(FetchRefused, match=r"embeds 169\.254\.169\.254"):
        vet_ip("64:ff9b::a9fe:a9fe")
    with pytest.raises(FetchRefused, match=r"6to4 tunnel.*embeds 8\.8\.8\.8"):
        vet_ip("2002:808:808::1")


def test_supplementary_blocklist_covers_interpreter_gaps() -> None:
    # Ranges this interpreter's is_global gets wrong (3.11.7, before the CVE-2024-4032 fixes):
    # our own list must refuse them regardless.
    for address in ("224.0.0.1", "192.88.99.1", "64:ff9b:1::1", "fec0::1", "ff02::1", "::7f00:1", "3fff::1"):
        with pytest.raises(FetchRefused):
            vet_ip(ipaddress.ip_address(address))


# -- 2. URLs: refused by parse_and_vet_url before any DNS ----------------------------------------

REFUSED_URLS = [
    pytest.param("file:///etc/passwd", "scheme", id="scheme-file"),
    pytest.param("gopher://127.0.0.1:6379/_INFO", "scheme", id="scheme-gopher"),
    pytest.param("ftp://example.com/a.mp4", "scheme", id="scheme-ftp"),
    pytest.param("dict://example.com:11211/stat", "scheme", id="scheme-dict"),
    pytest.param("ldap://example.com/", "scheme", id="scheme-ldap"),
    pytest.param("ws://example.com/", "scheme", id="scheme-ws"),
    pytest.param("data:video/mp4;base64,AAAA", "scheme", id="scheme-data"),
    pytest.param("javascript:alert(1)", "scheme", id="scheme-javascript"),
    pytest.param("jar:http://example.com/a.jar!/x", "scheme", id="scheme-jar"),
    pytest.param("//example.com/a.mp4", "scheme", id="scheme-relative"),
    pytest.param("http://user:pass@example.com/", "userinfo", id="userinfo-user-pass"),
    pytest.param("http://example.com@127.0.0.1/", "userinfo", id="userinfo-host-spoof"),
    pytest.param("http://@example.com/", "userinfo", id="userinfo-empty"),
    pytest.param("http://a@b@example.com/", "userinfo", id="userinfo-double-at"),
    pytest.param("http://127.0.0.1:80@example.com/", "userinfo", id="userinfo-port-spoof"),
    pytest.param("http://127.0.0.1\\@example.com/", "url", id="backslash-authority"),
    pytest.param("http://exa mple.com/", "url", id="space-in-host"),
    pytest.param("http://exa\tmple.com/", "url", id="tab-in-host"),
    pytest.param("http://example.com:8080/", "port", id="port-8080"),
    pytest.param("http://example.com:22/", "port", id="port-ssh"),
    pytest.param("https://example.com:6379/", "port", id="port-redis"),
    pytest.param("http://example.com:0/", "port", id="port-zero"),
    pytest.param("http://2130706433/", "host", id="decimal-dword"),
    pytest.param("http://017700000001/", "host", id="octal-dword"),
    pytest.param("http://0x7f000001/", "host", id="hex-dword"),
    pytest.param("http://0x7f.0x0.0x0.0x1/", "host", id="hex-dotted"),
    pytest.param("http://0x7f.1/", "host", id="hex-short"),
    pytest.param("http://0177.0.0.1/", "host", id="octal-dotted"),
    pytest.param("http://127.000.000.001/", "host", id="zero-padded"),
    pytest.param("http://127.1/", "host", id="short-two-part"),
    pytest.param("http://127.0.1/", "host", id="short-three-part"),
    pytest.param("http://127.0.0.1./", "host", id="trailing-dot-ip"),
    pytest.param("http://0/", "host", id="zero"),
    pytest.param("http://0251.0376.0251.0376/", "host", id="octal-metadata"),
    pytest.param("http://2852039166/", "host", id="decimal-metadata"),
    pytest.param("http://example.0x7f/", "host", id="numeric-last-label"),
    pytest.param("http://%31%32%37.0.0.1/", "host", id="percent-encoded-host"),
    pytest.param("http://[fe80::1%25eth0]/", "host", id="ipv6-zone"),
    pytest.param("http://[v1.fe]/", "host", id="ipvfuture"),
    pytest.param("http://a..b/", "host", id="empty-label"),
    pytest.param("http://127.0.0.1/", "address", id="literal-loopback"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "address", id="literal-metadata"),
    pytest.param("http://100.64.0.1/", "address", id="literal-cgnat"),
    pytest.param("http://0.0.0.0/", "address", id="literal-unspecified"),
    pytest.param("http://[::1]/", "address", id="literal-v6-loopback"),
    pytest.param("http://[::ffff:a9fe:a9fe]/", "address", id="literal-mapped-metadata"),
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", "address", id="literal-nat64-metadata"),
    pytest.param("http://[::127.0.0.1]/", "address", id="literal-compatible-loopback"),
    pytest.param("http://１２７.０.０.１/", "address", id="fullwidth-digits"),
    pytest.param("http://①②⑦.⓪.⓪.①/", "address", id="circled-digits"),
    pytest.param("http://" + "a" * 9000 + ".com/", "url", id="overlong"),
]


@pytest.mark.parametrize(("url", "rule"), REFUSED_URLS)
def test_parse_refuses(url: str, rule: str) -> None:
    with pytest.raises(FetchRefused) as info:
        parse_and_vet_url(url, FetchPolicy())
    assert info.value.details["rule"] == rule, info.value.message
    assert isinstance(info.value, BadRequest) and info.value.status == 400
    assert info.value.to_dict()["error"]["code"] == "url_refused"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a.mp4?x=1#frag", "http://example.com/a.mp4?x=1"),
        ("HTTPS://Example.COM:443/v", "https://example.com/v"),
        ("http://bücher.de/v.mp4", "http://xn--bcher-kva.de/v.mp4"),
        ("https://93.184.216.34/v", "https://93.184.216.34/v"),
        ("http://[2606:4700::1111]/v", "http://[2606:4700::1111]/v"),
    ],
)
def test_parse_accepts(url: str, expected: str) -> None:
    assert str(parse_and_vet_url(url, FetchPolicy())) == expected


def test_messages_name_the_rule() -> None:
    cases = {
        "http://10.0.0.1/": "address 10.0.0.1 is not public",
        "file:///x": "scheme 'file' is not http(s)",
        "http://example.com:8080/": "port 8080 is not allowed",
        "http://u@example.com/": "credentials in URLs are not accepted",
    }
    for url, message in cases.items():
        with pytest.raises(FetchRefused, match=re.escape(message)):
            parse_and_vet_url(url, FetchPolicy())


# -- 3. DNS answers: refused by resolve_vetted through a resolver the test controls ----------------

RESOLVER = StaticResolver(
    {
        "private.test": ["10.0.0.5"],
        "metadata.test": ["169.254.169.254"],
        "cgnat.test": ["100.64.1.1"],
        "mixed.test": ["93.184.216.34", "10.0.0.1"],
        "mixed-v6.test": ["2606:4700::1111", "fd00::1"],
        "mapped.test": ["::ffff:192.168.0.1"],
        "nat64.test": ["64:ff9b::a9fe:a9fe"],
        "teredo.test": ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
        "zone.test": ["fe80::1%eth0"],
        "public.test": ["93.184.216.34", "2606:4700::1111"],
    }
)


@pytest.mark.parametrize(
    "name",
    [
        "private.test",
        "metadata.test",
        "cgnat.test",
        "mixed.test",
        "mixed-v6.test",
        "mapped.test",
        "nat64.test",
        "teredo.test",
        "zone.test",
    ],
)
async def test_name_resolving_inside_is_refused(name: str) -> None:
    with pytest.raises(FetchRefused, match=f"host '{name}' resolves to a refused address"):
        await resolve_vetted(name, 443, FetchPolicy(), RESOLVER)


async def test_public_name_passes_with_every_answer() -> None:
    addrs = await resolve_vetted("public.test", 443, FetchPolicy(), RESOLVER)
    assert [str(a) for a in addrs] == ["93.184.216.34", "2606:4700::1111"]


async def test_unknown_name_fails_without_asking_anyone() -> None:
    with pytest.raises(FetchFailed, match="could not resolve"):
        await resolve_vetted("unknown.test", 443, FetchPolicy(), RESOLVER)


async def test_connector_vets_ip_literals_itself() -> None:
    # aiohttp's own _resolve_host returns IP literals unchecked; ours must not.
    connector = _VettingConnector(FetchPolicy(), RESOLVER, None)
    try:
        for literal in ("10.0.0.1", "169.254.169.254", "::1", "::ffff:7f00:1"):
            with pytest.raises(FetchRefused):
                await connector._resolve_host(literal, 80)
        assert RESOLVER.queries.count("10.0.0.1") == 0  # literals never reach the resolver
    finally:
        await connector.close()


def test_allow_hosts_is_one_exact_pair() -> None:
    policy = FetchPolicy(allow_hosts=frozenset({("127.0.0.1", 8081)}))
    vet_address(ipaddress.ip_address("127.0.0.1"), 8081, policy)
    for ip, port in (("127.0.0.1", 8082), ("127.0.0.2", 8081), ("::ffff:127.0.0.1", 8081), ("::1", 8081)):
        with pytest.raises(FetchRefused):
            vet_address(ipaddress.ip_address(ip), port, policy)


# -- 4. end to end: the whole Fetcher against the canary, which must see nothing -----------------

LOOPBACK_NAMES = {
    "internal.test": ["127.0.0.1"],
    "v6.internal.test": ["::1"],
    "mapped.internal.test": ["::ffff:127.0.0.1"],
    "zero.internal.test": ["0.0.0.0"],
    "other-loopback.test": ["127.0.0.2"],
    "localhost": ["127.0.0.1", "::1"],
    "evil.test": ["127.0.0.1"],
}

# "{P}" is the canary's port; the end-to-end policy allows that port, so only the address rules
# (or syntax rules) can refuse these, never the port rule.
E2E_URLS = [
    pytest.param("http://127.0.0.1:{P}/", id="e2e-127.0.0.1"),
    pytest.param("http://127.0.0.2:{P}/", id="e2e-127.0.0.2"),
    pytest.param("http://127.255.255.254:{P}/", id="e2e-127-high"),
    pytest.param("http://0.0.0.0:{P}/", id="e2e-0.0.0.0"),
    pytest.param("http://[::1]:{P}/", id="e2e-v6-loopback"),
    pytest.param("http://[::ffff:127.0.0.1]:{P}/", id="e2e-mapped-dotted"),
    pytest.param("http://[::ffff:7f00:1]:{P}/", id="e2e-mapped-hex"),
    pytest.param("http://[0:0:0:0:0:ffff:127.0.0.1]:{P}/", id="e2e-mapped-long"),
    pytest.param("http://[::]:{P}/", id="e2e-v6-unspecified"),
    pytest.param("http://localhost:{P}/", id="e2e-localhost"),
    pytest.param("http://LOCALHOST:{P}/", id="e2e-localhost-upper"),
    pytest.param("http://localhost.:{P}/", id="e2e-localhost-fqdn"),
    pytest.param("http://internal.test:{P}/", id="e2e-name-to-127"),
    pytest.param("http://v6.internal.test:{P}/", id="e2e-name-to-v6-loopback"),
    pytest.param("http://mapped.internal.test:{P}/", id="e2e-name-to-mapped"),
    pytest.param("http://zero.internal.test:{P}/", id="e2e-name-to-0.0.0.0"),
    pytest.param("http://other-loopback.test:{P}/", id="e2e-name-to-127.0.0.2"),
    pytest.param("http://2130706433:{P}/", id="e2e-decimal"),
    pytest.param("http://017700000001:{P}/", id="e2e-octal"),
    pytest.param("http://0x7f000001:{P}/", id="e2e-hex"),
    pytest.param("http://0x7f.0x0.0x0.0x1:{P}/", id="e2e-hex-dotted"),
    pytest.param("http://0177.0.0.1:{P}/", id="e2e-octal-dotted"),
    pytest.param("http://127.1:{P}/", id="e2e-short"),
    pytest.param("http://127.0.0.1.:{P}/", id="e2e-trailing-dot"),
    pytest.param("http://１２７.０.０.１:{P}/", id="e2e-fullwidth"),
    pytest.param("http://0:{P}/", id="e2e-zero"),
    pytest.param("http://user:pass@127.0.0.1:{P}/", id="e2e-userinfo"),
    pytest.param("http://allowed.example@127.0.0.1:{P}/", id="e2e-userinfo-spoof"),
    pytest.param("http://127.0.0.1:{P}@evil.test/", id="e2e-userinfo-port-spoof"),
    pytest.param("http://evil.test:{P}#@allowed.example/", id="e2e-fragment-at"),
    pytest.param("http://127.0.0.1:{P}\\@allowed.example/", id="e2e-backslash"),
    pytest.param("gopher://127.0.0.1:{P}/_GET%20/", id="e2e-gopher"),
    pytest.param("ftp://127.0.0.1:{P}/", id="e2e-ftp"),
    pytest.param("dict://127.0.0.1:{P}/", id="e2e-dict"),
    pytest.param("ws://127.0.0.1:{P}/", id="e2e-ws"),
    pytest.param("file:///etc/passwd", id="e2e-file"),
    pytest.param("REDIRECT:http://127.0.0.1:{P}/", id="e2e-redirect-loopback"),
    pytest.param("REDIRECT:http://internal.test:{P}/", id="e2e-redirect-name"),
    pytest.param("REDIRECT:http://[::1]:{P}/", id="e2e-redirect-v6"),
    pytest.param("REDIRECT:http://localhost:{P}/", id="e2e-redirect-localhost"),
    pytest.param("REDIRECT://127.0.0.1:{P}/", id="e2e-redirect-scheme-relative"),
    pytest.param("REDIRECT:http://0x7f.1:{P}/", id="e2e-redirect-hex"),
    pytest.param("REDIRECT:http://user@127.0.0.1:{P}/", id="e2e-redirect-userinfo"),
    pytest.param("REDIRECT:file:///etc/passwd", id="e2e-redirect-file"),
    pytest.param("REDIRECT:gopher://127.0.0.1:{P}/_x", id="e2e-redirect-gopher"),
]


@pytest.mark.parametrize("template", E2E_URLS)
async def test_canary_sees_nothing(
    template: str, canary: Canary, origin: int, loopback_only: ConnectLog
) -> None:
    policy = FetchPolicy(
        allowed_ports=frozenset({80, 443, canary.port}),
        allow_hosts=frozenset({("127.0.0.1", origin)}),  # the origin only: it does the redirecting
    )
    url = template.replace("{P}", str(canary.port))
    if url.startswith("REDIRECT:"):
        url = f"http://127.0.0.1:{origin}/r?to={_quote(url.removeprefix('REDIRECT:'))}"
    async with Fetcher(policy, StaticResolver(LOOPBACK_NAMES)) as fetcher:
        with pytest.raises(FetchRefused):
            await fetcher.open(url)
    assert canary.connections == []
    assert loopback_only.to_port(canary.port) == []


def _quote(url: str) -> str:
    """Percent-encode a URL for the ``to`` query parameter."""
    return quote(url, safe="")


async def test_canary_counts_when_allowed(canary: Canary, loopback_only: ConnectLog) -> None:
    # The control: the same canary does record a connection the policy allows.
    policy = FetchPolicy(allow_hosts=frozenset({("127.0.0.1", canary.port)}))
    async with Fetcher(policy, StaticResolver({})) as fetcher:
        response = await fetcher.open(f"http://127.0.0.1:{canary.port}/")
        assert [chunk async for chunk in response.iter_chunks()] == [b"canary"]
        response.close()
    assert len(canary.connections) == 1
    assert loopback_only.to_port(canary.port) == [("127.0.0.1", canary.port)]


async def test_ip_literal_is_vetted_even_if_url_checks_are_skipped(
    canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Disable the URL-level rules: the connector alone must still refuse the literal.
    def unchecked(url: str, policy: FetchPolicy, base: object = None) -> ParsedURL:
        parsed = URL(url)
        return ParsedURL(url=parsed, scheme=parsed.scheme, host=parsed.raw_host, port=parsed.port, ip=None)

    monkeypatch.setattr(fetch_module, "parse_and_vet_url", unchecked)
    policy = FetchPolicy(allowed_ports=frozenset({canary.port}))
    async with Fetcher(policy, StaticResolver(LOOPBACK_NAMES)) as fetcher:
        for host in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "internal.test"):
            with pytest.raises(FetchRefused, match="not public"):
                await fetcher.open(f"http://{host}:{canary.port}/")
    assert canary.connections == []


async def test_resolved_once_and_connected_to_the_vetted_address(
    origin: int, loopback_only: ConnectLog
) -> None:
    resolver = StaticResolver({"origin.test": ["127.0.0.1"]})
    policy = FetchPolicy(allow_hosts=frozenset({("127.0.0.1", origin)}))
    async with Fetcher(policy, resolver) as fetcher:
        response = await fetcher.open(f"http://origin.test:{origin}/")
        response.close()
    assert resolver.queries == ["origin.test"]
    assert loopback_only.to_port(origin) == [("127.0.0.1", origin)]
