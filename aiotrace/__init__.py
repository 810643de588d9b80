"""aiotrace: Go's ``net/http/httptrace`` for aiohttp clients.

Start at :func:`traced_session` and :class:`ClientTrace`. The private subpackages, from the
bottom up (each imports only those below it; ``lint-imports`` checks it):

* ``_trace``: events, hooks, the per-request context, and the request/round-trip/connection
  state every hook is fired from (``_trace/hop.py``);
* ``_adapter``: everything that touches aiohttp: the session boundary, the connector with the
  reuse detector and redirect tracker, protocol, request/response classes, sockets, TLS, the
  ``TraceConfig`` signals, and the one module of private-API reads;
* ``_record``: the Recorder, timelines, kept requests, aggregates, HAR/JSONL and redaction;
* ``otel`` and ``testing`` (public modules), and ``_cli``: the command.
"""

from ._adapter.connector import ConnectionNotPooled, TracingConnector
from ._adapter.session import traced_session
from ._adapter.signals import trace_config
from ._adapter.tls import preload_default_twins
from ._record.recorder import Recorder
from ._record.redact import Redaction
from ._record.stalls import LoopStallMonitor
from ._record.stats import HostStats, LatencyHistogram, Quantiles, Stats
from ._record.timeline import ConnectionRecord, Hop, Marks, Redirect, RequestTimeline, Timings
from ._trace.context import context_client_trace, with_client_trace
from ._trace.events import (
    ConnectDoneInfo,
    ConnectStartInfo,
    ConnInfo,
    DNSDoneInfo,
    DNSStartInfo,
    GetConnInfo,
    Got1xxResponseInfo,
    Got100ContinueInfo,
    GotConnInfo,
    GotFirstResponseByteInfo,
    PoolWaitDoneInfo,
    PoolWaitStartInfo,
    PutIdleConnInfo,
    RedirectInfo,
    RequestDoneInfo,
    RequestEndInfo,
    RequestExceptionInfo,
    RequestStartInfo,
    ResponseBodyDoneInfo,
    RetryInfo,
    RoundTrip,
    TLSHandshakeDoneInfo,
    TLSHandshakeStartInfo,
    TLSInfo,
    Wait100ContinueInfo,
    WroteHeaderFieldInfo,
    WroteHeadersInfo,
    WroteRequestInfo,
)
from ._trace.hooks import HOOK_NAMES, ClientTrace
from ._version import __version__ as __version__

__all__ = [
    # Tracing a request
    "ClientTrace",
    "context_client_trace",
    "with_client_trace",
    "HOOK_NAMES",
    # Wiring a session
    "traced_session",
    "TracingConnector",
    "trace_config",
    # Timelines
    "Recorder",
    "RequestTimeline",
    "Hop",
    "Timings",
    "Marks",
    "Redirect",
    "ConnectionRecord",
    "Stats",
    "HostStats",
    "LatencyHistogram",
    "Quantiles",
    "Redaction",
    "LoopStallMonitor",
    # Events: the request and its connection
    "RoundTrip",
    "ConnInfo",
    "TLSInfo",
    "ConnectionNotPooled",
    # Events, one per hook
    "RequestStartInfo",
    "GetConnInfo",
    "PoolWaitStartInfo",
    "PoolWaitDoneInfo",
    "DNSStartInfo",
    "DNSDoneInfo",
    "ConnectStartInfo",
    "ConnectDoneInfo",
    "TLSHandshakeStartInfo",
    "TLSHandshakeDoneInfo",
    "GotConnInfo",
    "WroteHeaderFieldInfo",
    "WroteHeadersInfo",
    "Wait100ContinueInfo",
    "WroteRequestInfo",
    "GotFirstResponseByteInfo",
    "Got100ContinueInfo",
    "Got1xxResponseInfo",
    "ResponseBodyDoneInfo",
    "PutIdleConnInfo",
    "RedirectInfo",
    "RetryInfo",
    "RequestEndInfo",
    "RequestExceptionInfo",
    "RequestDoneInfo",
]

# Like aiohttp's own default SSL contexts, their twins load the trust store at import time,
# never on the event loop.
preload_default_twins()

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, tuple):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
