"""The embedded catalog's synthetic collections, items and asset files.

Everything is a pure function of the configuration and an item's index: no file on disk, no
randomness between runs. Shapes follow ESA MAAP (see the project's MAAP research note): FLEX L1B
and L1C products in ``FLEXL1CommissioningProducts10``, FLEX L2 tiles in ``FLEXL2Products10``,
BIOMASS L1B DGM and L2A products, plus a few collections without items so that collection search
has something to page through.

Per item (ids, datetimes and footprints computed from the index):

- ``product``: the whole product as a zip built on the fly, at an extension-less
  ``/data/zipper/...`` URL, with ``file:local_path`` ``<ID>.zip`` and no size or checksum;
- ``enclosure_*``: static files with ``file:size``, ``file:checksum`` (sha2-256 multihash of the
  served bytes) and ``file:local_path`` ``<ID>/...`` (BIOMASS ``enclosure_nc`` has a size only,
  as some real assets do);
- ``thumbnail``: a public quicklook under a ``/public/`` path segment, served without a token.

Items are kept as small :class:`ItemRecord` tuples; JSON is rendered per request, so 100k items
cost a few tens of MB in the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from bulkflex.demo.content import FileSpec, size_for

__all__ = [
    "COLLECTIONS",
    "AssetSpec",
    "CollectionSpec",
    "ItemRecord",
    "build_records",
    "collection_json",
    "item_assets",
    "item_json",
]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """One collection and the recipe of its items.

    Attributes:
        kind: "flex_l1", "flex_l2", "bio_l1", "bio_l2", or "" for a collection without items.
        product_types: cycled through item by item (FLEX L1 gives each acquisition an L1B and an
            L1C product with the same times and footprint).
        count: default number of items.
        step_s: seconds between consecutive acquisitions; duration_s: product duration.
        footprint: (width, height, skew) in degrees.
    """

    id: str
    title: str
    description: str
    platform: str
    instruments: tuple[str, ...]
    organisation: str
    kind: str = ""
    product_types: tuple[str, ...] = ()
    level: str = ""
    bucket: str = ""
    start: str = "2023-07-01T00:00:00Z"
    end: str | None = None
    count: int = 0
    step_s: float = 0.0
    duration_s: float = 0.0
    footprint: tuple[float, float, float] = (1.0, 1.0, 0.0)
    keywords: tuple[str, ...] = ()


COLLECTIONS: tuple[CollectionSpec, ...] = (
    CollectionSpec(
        id="FLEXL1CommissioningProducts10",
        title="FLEX L1 Commissioning Products",
        description="FLEX FLORIS Level 1B observations and Level 1C synergy products "
        "(commissioning phase, synthetic demo data).",
        platform="FLEX",
        instruments=("FLORIS",),
        organisation="ESA MAAP",
        kind="flex_l1",
        product_types=("L1B_OBS___", "L1C_FLXSYN"),
        level="L1",
        bucket="flex-pdgs-01",
        start="2023-07-01T00:00:00Z",
        count=1600,
        step_s=100.7 * 60 / 2,
        duration_s=180.0,
        footprint=(3.0, 10.5, 0.9),
        keywords=("FLEX", "FLORIS", "fluorescence", "Level 1"),
    ),
    CollectionSpec(
        id="FLEXL2Products10",
        title="FLEX L2 Products",
        description="FLEX Level 2 sun-induced fluorescence tiles (synthetic demo data).",
        platform="FLEX",
        instruments=("FLORIS",),
        organisation="ESA MAAP",
        kind="flex_l2",
        product_types=("L2__FLXSYN",),
        level="L2",
        bucket="flex-pdgs-01",
        start="2023-07-01T00:00:00Z",
        count=1200,
        step_s=45 * 60,
        duration_s=60.0,
        footprint=(1.0, 1.0, 0.0),
        keywords=("FLEX", "fluorescence", "Level 2"),
    ),
    CollectionSpec(
        id="BiomassLevel1b",
        title="BIOMASS Level 1B",
        description="BIOMASS P-band SAR detected ground multi-looked products (synthetic).",
        platform="BIOMASS",
        instruments=("P-SAR",),
        organisation="ESA MAAP",
        kind="bio_l1",
        product_types=("S1_DGM__1S", "S2_DGM__1S", "S3_DGM__1S"),
        level="L1B",
        bucket="biomass-pdgs-01",
        start="2025-06-01T00:00:00Z",
        count=1000,
        step_s=30 * 60,
        duration_s=21.0,
        footprint=(1.6, 1.0, 0.1),
        keywords=("BIOMASS", "SAR", "P-band", "Level 1"),
    ),
    CollectionSpec(
        id="BiomassLevel2a",
        title="BIOMASS Level 2A",
        description="BIOMASS forest disturbance, height and ground notch products (synthetic).",
        platform="BIOMASS",
        instruments=("P-SAR",),
        organisation="ESA MAAP",
        kind="bio_l2",
        product_types=("FP_FD__L2A", "FP_FH__L2A", "FP_GN__L2A"),
        level="L2A",
        bucket="biomass-pdgs-01",
        start="2025-09-01T00:00:00Z",
        count=600,
        step_s=60 * 60,
        duration_s=60.0,
        footprint=(2.0, 2.0, 0.0),
        keywords=("BIOMASS", "forest", "Level 2"),
    ),
    CollectionSpec(
        id="BiomassLevel1a",
        title="BIOMASS Level 1A",
        description="BIOMASS single-look complex slant products.",
        platform="BIOMASS",
        instruments=("P-SAR",),
        organisation="ESA MAAP",
        start="2025-06-01T00:00:00Z",
    ),
    CollectionSpec(
        id="BiomassLevel1bIOC",
        title="BIOMASS Level 1B (IOC)",
        description="BIOMASS in-orbit commissioning Level 1B products.",
        platform="BIOMASS",
        instruments=("P-SAR",),
        organisation="ESA MAAP",
        start="2025-05-01T00:00:00Z",
        end="2025-06-01T00:00:00Z",
    ),
    CollectionSpec(
        id="BiomassAux",
        title="BIOMASS Auxiliary Data",
        description="BIOMASS auxiliary files.",
        platform="BIOMASS",
        instruments=("P-SAR",),
        organisation="ESA MAAP",
        start="2025-04-29T00:00:00Z",
    ),
    CollectionSpec(
        id="BiomassSimulated",
        title="BIOMASS Simulated Products",
        description="Simulated BIOMASS products for algorithm development.",
        platform="BIOMASS",
        instruments=("P-SAR",),
        organisation="ESA MAAP",
        start="2017-01-01T00:00:00Z",
        end="2021-12-31T23:59:59Z",
    ),
    CollectionSpec(
        id="EarthCAREL1Validated_MAAP",
        title="EarthCARE L1 Validated Products",
        description="EarthCARE Level 1 validated products.",
        platform="EarthCARE",
        instruments=("ATLID", "CPR", "MSI", "BBR"),
        organisation="ESA/JAXA",
        start="2024-05-28T00:00:00Z",
    ),
    CollectionSpec(
        id="EarthCAREL2Validated_MAAP",
        title="EarthCARE L2 Validated Products",
        description="EarthCARE Level 2 validated products.",
        platform="EarthCARE",
        instruments=("ATLID", "CPR", "MSI"),
        organisation="ESA/JAXA",
        start="2024-05-28T00:00:00Z",
    ),
    CollectionSpec(
        id="CCIBiomassV5.01",
        title="ESA CCI Above-Ground Biomass v5.01",
        description="Climate Change Initiative global above-ground biomass maps.",
        platform="multi-mission",
        instruments=("multi-sensor",),
        organisation="ESA CCI",
        start="2010-01-01T00:00:00Z",
        end="2022-12-31T23:59:59Z",
    ),
    CollectionSpec(
        id="AeolusL2BProducts",
        title="Aeolus L2B Wind Products",
        description="Aeolus Level 2B horizontal line-of-sight winds.",
        platform="Aeolus",
        instruments=("ALADIN",),
        organisation="ESA",
        start="2018-09-03T00:00:00Z",
        end="2023-04-30T23:59:59Z",
    ),
    CollectionSpec(
        id="CryoSat2L1bSARIN",
        title="CryoSat-2 SIRAL L1b SARIn",
        description="CryoSat-2 interferometric altimetry Level 1b.",
        platform="CryoSat-2",
        instruments=("SIRAL",),
        organisation="ESA",
        start="2010-07-16T00:00:00Z",
    ),
)

_GOLDEN_DEG = 137.50776405003785
_EPOCH_FORMAT = "%Y%m%dT%H%M%S"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """The compact form of one item; every field is derived from (collection, index).

    ``start``/``end`` are POSIX seconds; ``bbox`` is (west, south, east, north).
    """

    collection: str
    index: int
    id: str
    product_type: str
    start: float
    end: float
    bbox: tuple[float, float, float, float]
    ring: tuple[tuple[float, float], ...]


def _letters(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    value = (n * 2654435761) & 0xFFFFFFFF
    for _ in range(6):
        out.append(alphabet[value % 26])
        value //= 26
        value ^= n * 40503
    return "".join(out)


def _record(spec: CollectionSpec, index: int) -> ItemRecord:
    types = len(spec.product_types)
    acquisition = index // types if spec.kind == "flex_l1" else index
    product_type = spec.product_types[index % types]
    start = _parse(spec.start) + timedelta(seconds=acquisition * spec.step_s)
    stop = start + timedelta(seconds=spec.duration_s)
    # Footprint centres spread over the globe by the golden angle (deterministic, no clustering).
    cx = round(((acquisition * _GOLDEN_DEG) % 340.0) - 170.0, 4)
    cy = round(((acquisition * 61.80339887) % 125.0) - 55.0, 4)
    width, height, skew = spec.footprint
    w2, h2 = width / 2, height / 2
    ring = (
        (round(cx - w2 - skew, 4), round(cy - h2, 4)),
        (round(cx + w2 - skew, 4), round(cy - h2, 4)),
        (round(cx + w2 + skew, 4), round(cy + h2, 4)),
        (round(cx - w2 + skew, 4), round(cy + h2, 4)),
    )
    bbox = (
        min(p[0] for p in ring),
        min(p[1] for p in ring),
        max(p[0] for p in ring),
        max(p[1] for p in ring),
    )
    t0, t1 = start.strftime(_EPOCH_FORMAT), stop.strftime(_EPOCH_FORMAT)
    created = (start + timedelta(days=600, seconds=acquisition * 37 % 86400)).strftime(
        _EPOCH_FORMAT
    )
    relative_orbit = acquisition % 385 + 1
    if spec.kind == "flex_l1":
        version = "00" if product_type.startswith("L1B") else "01"
        item_id = (
            f"FLX_{product_type}_{t0}_{t1}_{created}_{int(spec.duration_s):04d}_100_"
            f"{relative_orbit:03d}_{2000 + acquisition % 1000:04d}_{version}"
        )
    elif spec.kind == "flex_l2":
        tile = f"{31 + acquisition % 30:02d}{'CDEFGHJKLMNPQRSTUVWX'[acquisition % 20]}DD"
        item_id = (
            f"FLX_{product_type}_{t0}_{t1}_{created}_{int(spec.duration_s):04d}_100_"
            f"{relative_orbit:03d}_{tile}_01"
        )
    else:
        item_id = (
            f"BIO_{product_type}_{t0}_{t1}_T_G01_M01_C01_T{acquisition % 1000:03d}_"
            f"F{acquisition % 300:03d}_01_{_letters(acquisition)}"
        )
    return ItemRecord(
        collection=spec.id,
        index=index,
        id=item_id,
        product_type=product_type,
        start=start.timestamp(),
        end=stop.timestamp(),
        bbox=bbox,
        ring=ring,
    )


def build_records(spec: CollectionSpec, count: int) -> list[ItemRecord]:
    """The first ``count`` items of ``spec``, in acquisition order."""
    return [_record(spec, index) for index in range(count)] if spec.kind else []


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """One asset of an item: its key, its served file, and the STAC fields it shows."""

    key: str
    file: FileSpec
    media_type: str
    roles: tuple[str, ...]
    title: str | None
    local_path: str | None
    show_size: bool
    show_checksum: bool


def _date_path(record: ItemRecord) -> str:
    moment = datetime.fromtimestamp(record.start, UTC)
    return f"{moment:%Y/%m/%d}"


@lru_cache(maxsize=4096)
def item_assets(
    record: ItemRecord, data_size: tuple[int, int], spec_kind: str, bucket: str
) -> tuple[AssetSpec, ...]:
    """The assets of ``record``; URL paths are relative to the server root (``/data/...``)."""
    iid = record.id
    low = iid.lower()
    base = f"/data/{bucket}/{record.collection}/{_date_path(record)}/{iid}"
    small_xml = (2 * KiB, 16 * KiB)
    thumb = (8 * KiB, 32 * KiB)

    def static(path: str, kind_size: tuple[int, int]) -> FileSpec:
        return FileSpec(path=path, size=size_for(path, *kind_size))

    assets: list[AssetSpec] = [
        AssetSpec(
            key="product",
            file=FileSpec(
                path=f"/data/zipper/{bucket}/{record.collection}/{_date_path(record)}/{iid}/{iid}",
                size=None,
                zipped=True,
            ),
            media_type="application/zip",
            roles=("data",),
            title="Zipped product",
            local_path=f"{iid}.zip",
            show_size=False,
            show_checksum=False,
        )
    ]
    enclosures: list[tuple[str, str, str, tuple[str, ...], tuple[int, int], bool]] = []
    if spec_kind == "flex_l1" and record.product_type.startswith("L1B"):
        for band in ("hre1", "hre2", "lres"):
            enclosures.append(
                (f"enclosure_{band}_nc", f"{iid}/{low}_{band}.nc", "application/x-netcdf",
                 ("data",), data_size, True)
            )  # fmt: skip
    elif spec_kind == "flex_l1":
        enclosures.append(
            ("enclosure_nc", f"{iid}/{low}.nc.nc", "application/x-netcdf", ("data",), data_size,
             True)
        )  # fmt: skip
    elif spec_kind == "flex_l2":
        enclosures.append(
            ("enclosure_nc", f"{iid}/{low}.nc", "application/x-netcdf", ("data",), data_size, True)
        )
    if spec_kind.startswith("flex"):
        enclosures.append(
            ("enclosure_header_xml", f"{iid}/{iid}.xml", "application/xml", ("metadata",),
             small_xml, True)
        )  # fmt: skip
        thumb_path = f"{base}/public/{low}_ql.png"
    else:
        short = "_".join(low.split("_")[:-2])
        if spec_kind == "bio_l1":
            enclosures += [
                ("enclosure_tiff", f"{iid}/{iid}/measurement/{short}_i_abs.tiff",
                 "image/tiff; application=geotiff", ("data",), data_size, True),
                ("enclosure_nc", f"{iid}/{iid}/annotation/{short}_lut.nc",
                 "application/x-netcdf", ("data",), data_size, False),
            ]  # fmt: skip
        else:
            variable = record.product_type[3:5].lower()
            enclosures.append(
                ("enclosure_tiff", f"{iid}/{iid}/measurement/{short}_{variable}.tiff",
                 "image/tiff; application=geotiff", ("data",), data_size, True)
            )  # fmt: skip
        enclosures.append(
            ("enclosure_annot_xml", f"{iid}/{iid}/annotation/{short}_annot.xml",
             "application/xml", ("metadata",), small_xml, True)
        )  # fmt: skip
        thumb_path = f"{base}/{iid}/public/{short}_ql.png"
    for key, local, media, roles, size_range, checksum in enclosures:
        relative = local.split("/", 1)[1]
        assets.append(
            AssetSpec(
                key=key,
                file=static(f"{base}/{relative}", size_range),
                media_type=media,
                roles=roles,
                title=local.rsplit("/", 1)[-1],
                local_path=local,
                show_size=True,
                show_checksum=checksum,
            )
        )
    assets.append(
        AssetSpec(
            key="thumbnail",
            file=static(thumb_path, thumb),
            media_type="image/png",
            roles=("thumbnail",),
            title="QUICKLOOK",
            local_path=None,
            show_size=False,
            show_checksum=False,
        )
    )
    return tuple(assets)


def _properties(spec: CollectionSpec, record: ItemRecord) -> dict[str, Any]:
    start = datetime.fromtimestamp(record.start, UTC)
    acquisition = record.index // 2 if spec.kind == "flex_l1" else record.index
    updated = start + timedelta(days=600, seconds=acquisition * 37 % 86400 + 3600)
    props: dict[str, Any] = {
        "datetime": _stamp(start),
        "start_datetime": _stamp(start),
        "end_datetime": _stamp(datetime.fromtimestamp(record.end, UTC)),
        "platform": spec.platform,
        "instruments": list(spec.instruments),
        "product:type": record.product_type,
        "processing:level": spec.level if spec.kind != "flex_l1" else record.product_type[:3],
        "sat:orbit_state": "descending" if acquisition % 2 == 0 else "ascending",
        "sat:relative_orbit": acquisition % 385 + 1,
        "sat:absolute_orbit": 1000 + acquisition,
        "version": record.id.rsplit("_", 1)[-1] if spec.kind.startswith("flex") else "01",
        "updated": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return props


def item_json(
    spec: CollectionSpec,
    record: ItemRecord,
    *,
    root: str,
    catalog: str,
    data_size: tuple[int, int],
    checksum_of: Any,
) -> dict[str, Any]:
    """The STAC item of ``record``. ``root`` is the server origin (``http://127.0.0.1:PORT``),
    ``catalog`` the catalog root URL, ``checksum_of(FileSpec) -> str`` gives multihashes."""
    assets: dict[str, Any] = {}
    for asset in item_assets(record, data_size, spec.kind, spec.bucket):
        body: dict[str, Any] = {"href": root + asset.file.path, "type": asset.media_type}
        if asset.title:
            body["title"] = asset.title
        body["roles"] = list(asset.roles)
        if asset.show_size and asset.file.size is not None:
            body["file:size"] = asset.file.size
        if asset.show_checksum:
            body["file:checksum"] = checksum_of(asset.file)
        if asset.local_path:
            body["file:local_path"] = asset.local_path
        assets[asset.key] = body
    ring = [list(p) for p in record.ring]
    ring.append(list(record.ring[0]))
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
            "https://stac-extensions.github.io/product/v0.1.0/schema.json",
        ],
        "id": record.id,
        "collection": record.collection,
        "bbox": list(record.bbox),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": _properties(spec, record),
        "links": [
            {
                "rel": "self",
                "type": "application/geo+json",
                "href": f"{catalog}collections/{record.collection}/items/{record.id}",
            },
            {
                "rel": "collection",
                "type": "application/json",
                "href": f"{catalog}collections/{record.collection}",
            },
            {"rel": "root", "type": "application/json", "href": catalog},
        ],
        "assets": assets,
    }


def collection_json(spec: CollectionSpec, *, catalog: str, count: int) -> dict[str, Any]:
    """The STAC collection of ``spec``; its temporal extent ends with its last item."""
    end = spec.end
    bbox = [-180.0, -90.0, 180.0, 90.0]
    if spec.kind and count:
        last = _record(spec, count - 1)
        end = _stamp(datetime.fromtimestamp(last.end, UTC))
        bbox = [-180.0, -65.0, 180.0, 80.0]
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": spec.id,
        "title": spec.title,
        "description": spec.description,
        "keywords": list(spec.keywords),
        "license": "other",
        "providers": [
            {"name": spec.organisation, "roles": ["host"]},
            {"name": "ESA", "roles": ["producer", "licensor"]},
        ],
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[_stamp(_parse(spec.start)), end]]},
        },
        "summaries": {
            "platform": [spec.platform],
            "instruments": list(spec.instruments),
            **({"product:type": list(spec.product_types)} if spec.product_types else {}),
        },
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{catalog}collections/{spec.id}"},
            {"rel": "root", "type": "application/json", "href": catalog},
            {"rel": "parent", "type": "application/json", "href": catalog},
            {
                "rel": "items",
                "type": "application/geo+json",
                "href": f"{catalog}collections/{spec.id}/items",
            },
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "type": "application/schema+json",
                "href": f"{catalog}collections/{spec.id}/queryables",
            },
        ],
    }
