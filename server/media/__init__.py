"""Media: container sniffing, streaming sources, sampled PyAV decoding, stills, and fetching.

The decode core (sniff, source, decode, images, encode) is pure library code without aiohttp,
so the worker, the CLI and tests use it as is; only ``fetch`` (the SSRF-safe HTTP client) is
network I/O and uses aiohttp's client.
"""
