"""The ``aiotrace`` command: ``aiotrace URL`` as curl and httpstat users expect it, and its
subcommands (``demo``).

The top layer: may import everything in aiotrace, and aiohttp's public names only.

* ``main``: the console script's entry point, subcommands, the run and its exit status;
* ``args``: curl's flags, parsed and checked into ``Options`` (bad input: one line, exit 2);
* ``fetch``: making the requests, keeping each hop's response and where the body went;
* ``render``: the terminal views (a block per hop, the per-host table), with rich;
* ``waterfall``: httpstat's waterfall of one round trip, laid out as text;
* ``writeout``: ``-w``, curl's format variables;
* ``verbose``: ``-v``, each hook as it fires, one line each;
* ``exits``: the failed phase and broken ``--slo`` lines, and the exit statuses;
* ``exports``: ``--json``, ``--jsonl`` and ``--har`` documents;
* ``demo``: ``aiotrace demo``, the guided tour, on ``loopback``'s HTTP, HTTPS and DNS servers.
"""
