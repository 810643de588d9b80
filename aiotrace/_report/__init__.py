"""Reports built on records: the HTML waterfall of a crawl (``html.py``), crawl summaries.

Modules here read what ``aiotrace._record`` keeps (timelines, connections, per-host stats) and
may use ``aiotrace._trace``; they never import ``aiotrace._adapter`` (aiohttp) or
``aiotrace._cli`` (the command calls them, not the other way round).
"""
