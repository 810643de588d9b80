"""Recording: what a traced request becomes once its stamps are read, and how it is written.

May import ``aiotrace._trace`` only (never the adapter: it records whatever fed the trace).

* ``phases``: a round trip's stamps laid end to end as phases (the rules);
* ``timeline``: hops, redirects, curl-style marks and connections, read from the stamps;
* ``kept``: finished requests kept as plain values;
* ``histogram``: latency histograms with a stated relative error;
* ``stats``: per-host, per-phase aggregates (``Stats``, ``HostStats``), mergeable;
* ``fold``: how a Recorder folds finished requests into them, a batch at a time;
* ``counts``: every request counted at the boundary, under sampling;
* ``stalls``: the event-loop stall monitor and what each phase overlapped;
* ``redact``: what an export may show of URLs and headers;
* ``har``: HAR 1.2, one entry per round trip;
* ``recorder``: the ``Recorder``, tying them together.
"""
