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

from typing import Any

from yarl import URL

from .stats import LatencyHistogram

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

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.hosts: dict[str, HostCounts] = {}
        self._labels: dict[Any, str] = {}

    def add(
        self,
        method: str,
        url: Any,
        status: int | None,
        err: BaseException | None,
        t0: float,
        t1: float,
    ) -> None:
        """Count one request (the boundary's ``on_unsampled`` signature)."""
        rows = self.rows
        rows += (url, status, None if err is None else type(err).__name__, t1 - t0)
        if len(rows) >= _LIMIT:
            self.fold()

    def fold(self) -> None:
        """Fold the pending rows into the per-host counts."""
        rows = self.rows
        hosts = self.hosts
        labels = self._labels
        for i in range(0, len(rows), _ROW):
            url, status, err, seconds = rows[i : i + _ROW]
            label = labels.get(url)
            if label is None:
                label = _label(url)
                if len(labels) >= _LABELS_LIMIT:
                    labels.clear()
                labels[url] = label
            counts = hosts.get(label)
            if counts is None:
                counts = hosts[label] = HostCounts()
            counts.requests += 1
            if err is not None:
                counts.errors[err] = counts.errors.get(err, 0) + 1
            elif status is not None:
                counts.statuses[status] = counts.statuses.get(status, 0) + 1
            counts.response.add(seconds * 1000.0)
        rows.clear()

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
