"""The adapter: everything that touches aiohttp, turning what it does into ``_trace`` calls.

May import ``aiotrace._trace`` and aiohttp; nothing above (recording, the command). The only
package that reads aiohttp's private names, and most of those reads sit in ``private.py``:

* ``session``: ``traced_session()`` and the request boundary around ``session._request``;
* ``connector``: ``TracingConnector`` and ``TracingUnixConnector``, with the reuse detector,
  redirect/retry tracking and the CONNECT tunnel (``got_conn`` fires there);
* ``protocol``: the response handler (first byte, 1xx, status, why a connection closed);
* ``messages``: the request and response classes (headers and body written, body done);
* ``sockets``: the socket factory (one ``connect_start``/``connect_done`` per address);
* ``tls``: the SSL object (handshake start and done) and the SSL context twins;
* ``signals``: ``trace_config()``, for sessions that only add aiohttp's ``TraceConfig``;
* ``instrumented``: what ``aiotrace.otel.instrument()`` does to a ``ClientSession`` being
  built (the traced connector and boundary where its connector allows, else the signals);
* ``private``: the reads of aiohttp's private API, with the versions they were checked on.
"""
