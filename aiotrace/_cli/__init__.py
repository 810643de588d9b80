"""The ``aiotrace`` command: argument parsing, terminal views, the demo.

The top layer: may import everything in aiotrace, and aiohttp's public names only.

* ``main``: the console script's entry point and argument parsing;
* ``render``: the terminal views of timelines;
* ``demo``: ``aiotrace demo``, the embedded loopback tour.
"""
