"""Media: container sniffing, streaming sources, sampled PyAV decoding and encoding.

Pure library code: nothing here imports aiohttp, so the worker, the CLI and tests use it as is.
"""
