"""The planner: STAC searches (as in ESA's FLEX and BIOMASS notebooks) turned into manifests.

::

    import bulkflex
    plan = bulkflex.plan(
        collections="FLEXL1CommissioningProducts10",
        bbox=[-10, 35, 30, 60],
        datetime="2023-07-01/2023-07-10",
        filter="productType='L1C_FLXSYN' and instrument='FLORIS'",
        output="flex.jsonl",
    )
    print(plan.stats.items, plan.stats.assets, plan.stats.bytes)

Modules: :mod:`~bulkflex.stac.params` (input checks), :mod:`~bulkflex.stac.client` (HTTP,
retries, paging), :mod:`~bulkflex.stac.search` (item and collection search),
:mod:`~bulkflex.stac.assets` (selection and paths), :mod:`~bulkflex.stac.planner` (streaming
into a manifest), :mod:`~bulkflex.stac.properties` (filter property spellings).
"""

from bulkflex.stac.assets import AssetSelector, Skipped
from bulkflex.stac.client import DEFAULT_CATALOG, CatalogOptions
from bulkflex.stac.params import CollectionQuery, ItemQuery
from bulkflex.stac.planner import (
    Plan,
    PlanRequest,
    PlanStats,
    PlanWarning,
    collection_query,
    collections,
    collections_async,
    make_plan_request,
    plan,
    plan_async,
)

__all__ = [
    "DEFAULT_CATALOG",
    "AssetSelector",
    "CatalogOptions",
    "CollectionQuery",
    "ItemQuery",
    "Plan",
    "PlanRequest",
    "PlanStats",
    "PlanWarning",
    "Skipped",
    "collection_query",
    "collections",
    "collections_async",
    "make_plan_request",
    "plan",
    "plan_async",
]
