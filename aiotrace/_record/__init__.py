"""Recording: what a traced request becomes once its stamps are read, and how it is written.

May import ``aiotrace._trace`` only (never the adapter: it records whatever fed the trace).

* ``timeline``: phases, hops, redirects and curl-style marks from a request's stamps;
* ``kept``: finished requests kept as plain values;
* ``stats``: per-host, per-phase aggregates in bounded memory;
* ``redact``: what an export may show of URLs and headers;
* ``har``: HAR 1.2, one entry per round trip;
* ``recorder``: the ``Recorder``, tying them together.
"""
