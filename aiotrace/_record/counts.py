"""Exact counts under sampling: every request, sampled or not, as the request boundary saw it.

A sampling Recorder counts each request once: a sampled one when it finishes, from its state;
one no trace sampled at the boundary (``aiotrace._adapter.session``), which tells it the
method, the URL as given, the status or the error, and one clock reading at each end. So
request, status and error counts are exact, and so is the distribution of the time to the
response (start to headers, or to the error) of every request; only the phases come from
the sample. A count is a row of four plain values, folded into per-host counts a batch at a
time, so the untraced path pays an append.
"""

from __future__ import annotations

from collections import Counter
from itertools import repeat
from operator import mul
from typing import Any

from yarl import URL

from .histogram import LatencyHistogram

__all__ = ["BoundaryCounts", "HostCounts"]

_ROW = 4  # URL as given, status, error kind, seconds to the response or error
_LIMIT = 1024 * _ROW
_LABELS_LIMIT = 4096  # URL -> host:port labels remembered (a crawl's URLs are all different)


class HostCounts:
    """One host's requests, every one of them: counts and the time to the response."""

    __slots__ = ("errors", "requests", "response", "statuses")

    def __init__(self) -> None:
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.response = LatencyHistogram()


class BoundaryCounts:
    """Per ``host:port`` counts of every request a sampling Recorder saw."""

    __slots__ = ("_labels", "hosts", "rows")

    limit = _LIMIT  # values in ``rows`` before they are folded

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.hosts: dict[str, HostCounts] = {}
        self._labels: dict[Any, str] = {}

    def __call__(
        self,
        method: str,
        url: Any,
        status: int | None,
        err: BaseException | None,
        t0: float,
        t1: float,
    ) -> None:
        """Count one request: the boundary's ``on_unsampled`` (which, for this class, appends
        the row itself: see ``aiotrace._adapter.session._counted_rows``)."""
        rows = self.rows
        rows += (url, status, None if err is None else type(err).__name__, t1 - t0)
        if len(rows) >= _LIMIT:
            self.fold()

    def fold(self) -> None:
        """Fold the pending rows into the per-host counts: outcomes counted by (URL, status,
        error) with a C-level Counter, so that Python works per distinct outcome, not per
        request; the times go to each host's histogram's pending list (bucketed a batch at a
        time by ``LatencyHistogram.flush``), in one C-level extend where the batch has one
        host."""
        rows = self.rows
        if not rows:
            return
        hosts = self.hosts
        urls = rows[0::_ROW]
        seconds = rows[3::_ROW]
        by_url: dict[Any, HostCounts] = {}
        for (url, status, err), n in Counter(
            zip(urls, rows[1::_ROW], rows[2::_ROW], strict=True)
        ).items():
            counts = by_url.get(url)
            if counts is None:
                counts = by_url[url] = self._host(url)
            counts.requests += n
            if err is not None:
                counts.errors[err] = counts.errors.get(err, 0) + n
            elif status is not None:
                counts.statuses[status] = counts.statuses.get(status, 0) + n
        if len({id(c) for c in by_url.values()}) == 1:
            pending = next(iter(by_url.values())).response.pending
            pending.extend(map(mul, seconds, repeat(1000.0)))
        else:
            for url, secs in zip(urls, seconds, strict=True):
                by_url[url].response.pending.append(secs * 1000.0)
        for counts in hosts.values():
            counts.response.flush()
        rows.clear()

    def _host(self, url: Any) -> HostCounts:
        """The counts of ``url``'s ``host:port``, made on first use."""
        labels = self._labels
        label = labels.get(url)
        if label is None:
            label = _label(url)
            if len(labels) >= _LABELS_LIMIT:
                labels.clear()
            labels[url] = label
        counts = self.hosts.get(label)
        if counts is None:
            counts = self.hosts[label] = HostCounts()
        return counts

    def clear(self) -> None:
        self.rows.clear()
        self.hosts.clear()


def _label(url: Any) -> str:
    """``host:port`` of a URL as the caller gave it (``?`` when it has no host)."""
    try:
        u = url if isinstance(url, URL) else URL(url)
    except (TypeError, ValueError):
        return "?"
    return f"{u.raw_host}:{u.port}" if u.raw_host else "?"
