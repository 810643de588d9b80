"""aiotrace: Go's ``net/http/httptrace`` for aiohttp clients.

Start at :func:`traced_session` and :class:`ClientTrace`; the events are in ``_events.py``,
and the code that fires each hook is in ``_state.py`` (called from ``_connector.py``,
``_protocol.py``, ``_request.py``, ``_sockets.py`` and ``_tls.py``).
"""

__version__ = "0.1.0"

from ._connector import ConnectionNotPooled, TracingConnector
from ._context import context_client_trace, with_client_trace
from ._events import (
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
from ._hooks import HOOK_NAMES, ClientTrace
from ._recorder import Recorder
from ._redact import Redaction
from ._session import traced_session
from ._signals import trace_config
from ._stalls import LoopStallMonitor
from ._stats import HostStats, LatencyHistogram, Quantiles, Stats
from ._timeline import ConnectionRecord, Hop, Marks, Redirect, RequestTimeline, Timings
from ._tls import preload_default_twins

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
