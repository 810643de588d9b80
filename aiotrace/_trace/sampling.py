"""Head sampling: whether a request is traced, decided once, at the request boundary.

A trace made with ``sample=`` is asked once per request, before anything else happens
(``Dispatch.sampling``, read by ``aiotrace._adapter.session``). Every round trip of that
request, redirects and retries included, shares the answer. A request no trace samples takes
the untraced path: no request state, no context variable, no response class; observers that
count every request (a sampling Recorder) see it only at the boundary, with its outcome and
one clock read at each end.

``sample`` is a ratio in (0, 1] (seeded with ``sample_seed`` for a reproducible sequence), or a
callable ``(method, url) -> bool`` for rules such as "always trace this host"; ``url`` is what
the caller passed (a ``str`` or a ``yarl.URL``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = ["Sample", "make_sampler"]

Sample: TypeAlias = float | Callable[[str, Any], bool] | None


def make_sampler(sample: Sample, seed: int | None) -> Callable[[str, Any], bool] | None:
    """The decision function for ``sample``; ``None`` where every request is traced."""
    if sample is None:
        return None
    if callable(sample):
        return sample
    if isinstance(sample, bool) or not isinstance(sample, int | float):
        raise TypeError(
            f"sample= takes a ratio in (0, 1] or a callable (method, url) -> bool, "
            f"not {type(sample).__name__}"
        )
    rate = float(sample)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"sample= ratio must be in (0, 1], not {sample!r}")
    if rate == 1.0:
        return None
    draw = random.Random(seed).random

    def ratio(method: str, url: Any) -> bool:
        return draw() < rate

    return ratio
