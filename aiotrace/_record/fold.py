"""The Recorder's fold: finished requests into per-host stats, a batch at a time.

The request path pays an append; the folding is done in batches, column by column, with C-level
maps (see :class:`HostTable`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .phases import chained_phase_columns, pooled_phase_columns, pooled_phases
from .stats import SEND, TOTAL, HostStats

__all__ = ["BATCH", "OPENED_LIMIT", "OPENED_ROW", "ROWS_LIMIT", "HostTable"]

BATCH = 4096  # values left pending across a Recorder's hosts (~1,000 pooled requests' worth)
# A row of HostTable.rows: host label, status, t_get_conn, t_wrote_request, t_first_byte,
# t_body_done of one request on a pooled connection; folded ROWS_LIMIT // _ROW at a time.
_ROW = 6
ROWS_LIMIT = BATCH // 4 * _ROW
# A row of HostTable.opened: host label, status, reused, t_get_conn, the end stamps of the
# blocked, DNS, connect and TLS phases (None where the phase did not happen), t_wrote_request,
# t_first_byte, t_body_done: the only round trip of a request with no error that opened a
# connection or waited for the pool. Folded OPENED_LIMIT // OPENED_ROW at a time.
OPENED_ROW = 11
OPENED_LIMIT = 256 * OPENED_ROW
_COLUMNS_FROM = 16  # rows of one host and phase set folded as columns; fewer, row by row
# HostStats.by_phase, by position: the seven phases (the timeline's PHASES), then the total.


def _count(stats: HostStats, n: int, reused: int, statuses: list[int | None]) -> None:
    """Count ``n`` requests of one round trip each (``reused`` on a pooled connection) and
    their ``statuses`` (``None``: no response)."""
    stats.requests += n
    stats.round_trips += n
    stats.reused += reused
    counts = stats.statuses
    for status, count in Counter(statuses).items():
        if status is not None:
            counts[status] = counts.get(status, 0) + count


class HostTable(dict[str, HostStats]):
    """Per-host stats with one budget for the values not yet bucketed.

    The usual request (one round trip on a pooled connection that did not wait for it, no
    error) reaches the table as a row of six plain values appended to ``rows`` (the
    Recorder's fold); ``fold_rows`` folds them a batch at a time, column by column. A
    request whose one round trip opened a connection or waited for the pool, with no error,
    is a row of ``opened`` (``fold_opened``: by host and the phases taken, column by
    column). Every other request is folded at once, its values left pending. The table
    counts the values left pending and lists the hosts it touched; at ``BATCH`` values
    every listed host is flushed. So pending values stay under ``BATCH`` (and rows under
    their limits), however many hosts there are (a crawl touches thousands, each a few
    times) and however many values a request brings (4 on a pooled connection, up to 9 per
    round trip on a new one), and batches stay large where it matters (many requests to
    few hosts).
    """

    __slots__ = ("dirty", "misses", "opened", "pending", "rows")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending = 0
        self.dirty: list[HostStats] = []
        self.rows: list[Any] = []  # _ROW values a request, see _ROW
        self.opened: list[Any] = []  # OPENED_ROW values a request, see OPENED_ROW
        # Beside ``opened``: host label and reuse_miss of each of its rows that opened a
        # connection, folded with them.
        self.misses: list[Any] = []

    def host(self, label: str) -> HostStats:
        """The stats of host ``label`` (``host:port``), made empty the first time."""
        stats = self.get(label)
        if stats is None:
            stats = self[label] = HostStats()
        return stats

    def touched(self, stats: HostStats) -> None:
        """``stats`` has values pending: list it for the next flush."""
        if not stats.dirty:
            stats.dirty = True
            self.dirty.append(stats)

    def leave(self, stats: HostStats, values: Any, total: float | None) -> None:
        """Leave one round trip's phase ``values`` (``PHASES`` order, ``None``: did not
        happen; may be empty) and, at a request's end, its ``total`` pending in ``stats``; at
        ``BATCH`` values, after a request, bucket them all."""
        pending = stats.by_phase
        n = 0
        for i, ms in enumerate(values):
            if ms is not None:
                (pending[i] or stats.pending_list(i)).append(ms)
                n += 1
        self.touched(stats)
        if total is None:
            self.pending += n
        else:
            (pending[TOTAL] or stats.pending_list(TOTAL)).append(total)
            self.folded(n + 1)

    def folded(self, values: int) -> None:
        """A request left ``values`` more values pending; at ``BATCH``, bucket them all."""
        self.pending += values
        if self.pending >= BATCH:
            self.flush()

    def fold_opened(self) -> None:
        """Fold the pending rows of round trips that opened a connection (see ``opened``),
        grouped by host and by the phases they took: a large group (requests to one service)
        column by column (``chained_phase_columns``), a small one (a crawl: each host a few
        times) row by row, where columns of a few values would cost more than they save."""
        rows = self.opened
        if not rows:
            return
        R = OPENED_ROW
        labels = rows[0::R]
        n = len(labels)
        stops = [rows[4 + i :: R] for i in range(4)]
        groups: dict[tuple[Any, ...], list[Any]]
        if labels.count(labels[0]) == n and all(c.count(None) in (0, n) for c in stops):
            groups = {(labels[0], *(c[0] is None for c in stops)): rows}  # the usual batch
        else:
            groups = {}
            for i in range(0, len(rows), R):
                row = rows[i : i + R]
                key = (row[0], row[4] is None, row[5] is None, row[6] is None, row[7] is None)
                group = groups.get(key)
                if group is None:
                    groups[key] = row
                else:
                    group += row
        for (label, *absent), group in groups.items():
            stats = self.host(label)
            if len(group) < _COLUMNS_FROM * R:
                for i in range(0, len(group), R):
                    self._leave_opened(stats, group, i)
                continue
            n = len(group) // R
            _count(stats, n, sum(group[2::R]), group[1::R])
            taken = [i for i in range(4) if not absent[i]] + [SEND, SEND + 1, SEND + 2]
            # The row holds each phase's end stamp at 4 + its position in PHASES.
            columns, totals = chained_phase_columns(group[3::R], [group[4 + i :: R] for i in taken])
            pending = stats.by_phase
            for i, values in zip(taken, columns, strict=True):
                (pending[i] or stats.pending_list(i)).extend(values)
            (pending[TOTAL] or stats.pending_list(TOTAL)).extend(totals)
            self.touched(stats)
            self.pending += (len(taken) + 1) * n
        rows.clear()
        misses = self.misses
        for (label, why), n in Counter(zip(misses[0::2], misses[1::2], strict=True)).items():
            counts = self.host(label).reuse_miss
            counts[why] = counts.get(why, 0) + n
        misses.clear()

    def _leave_opened(self, stats: HostStats, rows: list[Any], i: int) -> None:
        """Fold the row at ``rows[i]`` alone: what ``chained_phase_columns`` gives it."""
        stats.requests += 1
        stats.round_trips += 1
        if rows[i + 2]:
            stats.reused += 1
        status = rows[i + 1]
        if status is not None:
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
        pending = stats.by_phase
        t0 = at = rows[i + 3]
        n = 1  # the total
        for phase, stop in enumerate(rows[i + 4 : i + OPENED_ROW]):
            if stop is None:
                continue
            if stop > at:
                ms = (stop - at) * 1000.0
                at = stop
            else:
                ms = 0.0
            (pending[phase] or stats.pending_list(phase)).append(ms)
            n += 1
        (pending[TOTAL] or stats.pending_list(TOTAL)).append((at - t0) * 1000.0)
        self.touched(stats)
        self.pending += n

    def fold_rows(self) -> None:
        """Fold the pending rows: their counts, and their phases left pending (see ``rows``).

        Slices and C-level maps do the per-request work (``pooled_phase_columns``), so a
        request costs no Python frame here; only rows for more than one host are split by a
        Python loop first, and a host with few rows in the batch (a crawl) is folded row by
        row, where columns of a few values would cost more than they save.
        """
        rows = self.rows
        if not rows:
            return
        labels = rows[0::_ROW]
        groups: Any
        if labels.count(labels[0]) == len(labels):  # one host: the usual batch
            groups = ((labels[0], rows),)
        else:
            by_host: dict[str, list[Any]] = {}
            for i in range(0, len(rows), _ROW):
                group = by_host.get(rows[i])
                if group is None:
                    group = by_host[rows[i]] = []
                group += rows[i : i + _ROW]
            groups = by_host.items()
        for label, group in groups:
            stats = self.host(label)
            if len(group) < _COLUMNS_FROM * _ROW:
                for i in range(0, len(group), _ROW):
                    self._leave_pooled(stats, group, i)
                continue
            n = len(group) // _ROW
            _count(stats, n, n, group[1::_ROW])
            pending = stats.by_phase
            send = pending[SEND] or stats.pending_list(SEND)
            wait = pending[SEND + 1] or stats.pending_list(SEND + 1)
            receive = pending[SEND + 2] or stats.pending_list(SEND + 2)
            total = pending[TOTAL] or stats.pending_list(TOTAL)
            s, w, r, t = pooled_phase_columns(
                group[2::_ROW], group[3::_ROW], group[4::_ROW], group[5::_ROW]
            )
            send += s
            wait += w
            receive += r
            total += t
            self.touched(stats)
            self.pending += 4 * n
        rows.clear()

    def _leave_pooled(self, stats: HostStats, rows: list[Any], i: int) -> None:
        """Fold the row at ``rows[i]`` alone: what ``pooled_phase_columns`` gives it."""
        stats.requests += 1
        stats.round_trips += 1
        stats.reused += 1
        status = rows[i + 1]
        if status is not None:
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
        send, wait, receive = pooled_phases(*rows[i + 2 : i + _ROW])
        pending = stats.by_phase
        (pending[SEND] or stats.pending_list(SEND)).append(send)
        (pending[SEND + 1] or stats.pending_list(SEND + 1)).append(wait)
        (pending[SEND + 2] or stats.pending_list(SEND + 2)).append(receive)
        (pending[TOTAL] or stats.pending_list(TOTAL)).append(send + wait + receive)
        self.touched(stats)
        self.pending += 4

    def flush(self) -> None:
        """Fold the pending rows and bucket every pending value."""
        self.fold_rows()
        self.fold_opened()
        for stats in self.dirty:
            stats.flush()
        self.dirty.clear()
        self.pending = 0

    def clear(self) -> None:
        super().clear()
        self.dirty.clear()
        self.rows.clear()
        self.opened.clear()
        self.misses.clear()
        self.pending = 0
