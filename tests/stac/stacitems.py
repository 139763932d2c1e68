"""Items of the embedded catalog as its API renders them (shared by the STAC tests).

A module of its own, not conftest: several test folders have a conftest.py, and importing one
by name picks whichever comes first on sys.path.
"""

from __future__ import annotations

from typing import Any

from bulkflex.demo import DemoServer


def all_items(server: DemoServer) -> list[dict[str, Any]]:
    """Every item of the embedded catalog, rendered as its API renders them."""
    catalog = server.state.catalog
    return [
        catalog.render_item(record, root=server.url, catalog=server.catalog_url)
        for records in catalog.records.values()
        for record in records
    ]
