"""The ``aiotrace`` command: argument parsing, terminal views, the demo.

The top layer: may import everything in aiotrace, and aiohttp's public names only.

* ``main``: the console script's entry point and argument parsing;
* ``render``: the terminal views of timelines;
* ``demo``: ``aiotrace demo``, the embedded loopback tour;
* ``crawl``: ``aiotrace crawl``, a URL list traced concurrently (``crawl_report``: its
  per-host summary and JSON document; ``crawl_view``: its progress bar and terminal summary).
"""
