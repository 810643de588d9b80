"""The OpenTelemetry export (extra ``otel``), behind the public ``aiotrace.otel``.

May import everything below it (``_record``, ``_adapter``, ``_trace``); only ``aiotrace.otel``
imports it.

* ``spans``: ``OTelTrace``: the request's spans, propagation on every round trip, sampling at
  the request boundary;
* ``metrics``: the duration and phase histograms and the open-connections counter;
* ``instrument``: ``instrument()``/``uninstrument()``, every new ``ClientSession`` traced.
"""
