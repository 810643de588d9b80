"""The machine-readable outputs of a run: each request as JSON (its timeline's ``to_dict()``
and what the command adds: each hop's response line and headers, where the body went, the
failure's phase) and the Recorder's HAR with each response's status text, headers and size.
Header values are redacted as in every export, and credentials given on the command line are
scrubbed from error messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .exits import scrub

if TYPE_CHECKING:
    from aiotrace import Recorder, Redaction

    from .fetch import Transfer

__all__ = ["har", "transfer_dict"]


def transfer_dict(t: Transfer, r: Redaction, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """One request as a JSON-ready dict."""
    if t.timeline is None:  # not sampled (--sample): what the command saw of it
        f = t.failure
        return {
            "url": r.url(t.url),
            "method": t.method,
            "sampled": False,
            "status": t.responses[-1].status if t.responses else None,
            "error": t.error_text() or None,
            "failure": None if f is None else {"phase": f.phase, "during": f.during,
                                               "kind": f.kind, "message": f.message},
        }  # fmt: skip
    d: dict[str, Any] = t.timeline.to_dict(r)
    if d.get("error"):
        d["error"] = scrub(d["error"], secrets)
    for hop_dict, hop in zip(d["hops"], t.timeline.hops, strict=True):
        if hop_dict.get("error"):
            hop_dict["error"] = scrub(hop_dict["error"], secrets)
        resp = t.response_for(hop.index) if hop.status is not None else None
        hop_dict["response"] = (
            None
            if resp is None
            else {
                "http_version": resp.http_version,
                "status": resp.status,
                "reason": resp.reason,
                "headers": [[k, r.header(k, v)] for k, v in resp.headers],
            }
        )
    d["body"] = {"size": t.body_size, "path": t.body_path}
    f = t.failure
    d["failure"] = (
        None
        if f is None
        else {"phase": f.phase, "during": f.during, "kind": f.kind, "message": f.message}
    )
    return d


def har(
    rec: Recorder, transfers: Sequence[Transfer], r: Redaction, secrets: Sequence[str] = ()
) -> dict[str, Any]:
    """The Recorder's HAR 1.2 document, each response completed from what the run kept."""
    doc: dict[str, Any] = rec.to_har()
    by_id = {t.request_id: t for t in transfers}
    for entry in doc["log"]["entries"]:
        ours = entry.get("_aiotrace", {})
        if ours.get("error"):
            ours["error"] = scrub(ours["error"], secrets)
        t = by_id.get(ours.get("request_id"))
        hop = ours.get("hop", 0)
        resp = t.response_for(hop) if t is not None and entry["response"]["status"] else None
        if t is None or resp is None:
            continue
        response = entry["response"]
        response["statusText"] = resp.reason
        response["httpVersion"] = f"HTTP/{resp.http_version}"
        response["headers"] = [{"name": k, "value": r.header(k, v)} for k, v in resp.headers]
        mime = next((v for k, v in resp.headers if k.lower() == "content-type"), "")
        response["content"]["mimeType"] = mime
        if hop == len(t.responses) - 1 and t.error is None:
            response["content"] = {"size": t.body_size, "mimeType": mime}
            response["bodySize"] = t.body_size
    return doc
