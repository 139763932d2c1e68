"""An embedded, MAAP-like STAC catalog and asset server on loopback, for demos and tests.

``bulkflex serve-demo`` keeps one running; ``bulkflex demo`` starts one, plans and downloads
from it, and stops it. From Python::

    from bulkflex.demo import DemoServer
    with DemoServer() as server:              # or: async with DemoServer() as server:
        print(server.catalog_url)             # http://127.0.0.1:PORT/catalogue/

:class:`ServerThread` and :func:`start_app` are the loopback-serving pieces the demo server is
built on; the test servers reuse them.

Data is synthetic and deterministic (see :mod:`bulkflex.demo.data`); nothing leaves 127.0.0.1.
"""

from bulkflex.demo._threaded import ServerThread, start_app
from bulkflex.demo.server import DemoConfig, DemoServer, Faults, Stats

__all__ = ["DemoConfig", "DemoServer", "Faults", "ServerThread", "Stats", "start_app"]
