"""The core: hooks, their events, and the per-request state they are fired from.

Everything here is independent of aiohttp: the adapter (``aiotrace._adapter``) calls into it,
recording (``aiotrace._record``) reads it. It imports nothing of aiotrace's outside itself.
Layers inside, each importing only those before it:

* ``clock``: the one clock stamps are read from;
* ``events``: the frozen, slotted event types, one per hook;
* ``hooks``: :class:`ClientTrace`, how traces compose, and their compiled ``Dispatch``;
* ``context``: the trace a ``with_client_trace`` block puts in effect;
* ``connection``: one connection's life as the reuse detector sees it;
* ``hop``: one round trip, where every round-trip hook is fired, with the ordering rules;
* ``request``: one traced request, its round trips and the running request's ContextVar.
"""
