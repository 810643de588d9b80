"""Benchmarks for aiotrace: the CPU cost of tracing relative to a plain aiohttp client.

Run ``python -m benchmarks --help``; ``benchmarks/README.md`` says how the numbers are made.
"""
