"""Request and response models of the JSON API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from semstore.conditions import MAX_FILTER_KEYS, MAX_IN_VALUES, check_filter
from semstore.validation import MAX_KEY_CHARS, MAX_TEXT_CHARS, check_metadata, check_text
from server.deps import MAX_ID, NAME_PATTERN

# -- shared value types ---------------------------------------------------------------------------

_INT64 = 2**63


def _storable(value: str) -> str:
    """Valid Unicode without NUL (what SQLite and PostgreSQL can store and give back)."""
    return check_text(value, "text")


#: Any string field of a request: checked like stored text (no lone surrogates, no NUL).
Text = Annotated[str, AfterValidator(_storable)]

#: An item's metadata (see :func:`semstore.validation.check_metadata`).
Metadata = Annotated[dict[str, JsonValue], AfterValidator(check_metadata)]

#: Metadata keys usable in filters (no quotes, backslashes or control characters).
FilterKey = Annotated[str, Field(pattern=r'^[^"\\\x00-\x1f]{1,%d}$' % MAX_KEY_CHARS)]
FilterValue = (
    StrictBool
    | Annotated[StrictInt, Field(ge=-_INT64, lt=_INT64)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
)
#: A metadata filter: at most :data:`semstore.conditions.MAX_FILTER_KEYS` keys (the server's
#: ``max_filter_keys`` may lower that), each a value or an object of operators.
def _few_keys(value: Any) -> Any:
    # Before the items are validated one by one: a filter of 100,000 keys is refused at once,
    # and a bad operator gets one message naming it (not one per branch of the value union).
    if isinstance(value, dict):
        if len(value) > MAX_FILTER_KEYS:
            raise ValueError(f"a metadata filter may have at most {MAX_FILTER_KEYS} keys, got {len(value)}")
        if any(isinstance(item, dict) for item in value.values()):
            check_filter(value)
    return value


RangeValue = (
    Annotated[StrictInt, Field(ge=-_INT64, lt=_INT64)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
)
ValueList = Annotated[list[FilterValue], Field(min_length=1, max_length=MAX_IN_VALUES)]
FiniteNumber = Annotated[StrictInt, Field(ge=-_INT64, lt=_INT64)] | Annotated[StrictFloat, Field(allow_inf_nan=False)]


class FilterOperators(BaseModel):
    """What one key's value must satisfy, beyond equality (see :mod:`semstore.conditions`):
    ``{"$gte": 2020, "$lt": 2024}``, ``{"$in": ["cat", "dog"]}``, ``{"$exists": true}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    eq: FilterValue | None = Field(default=None, alias="$eq", description="Equal to this value.")
    ne: FilterValue | None = Field(default=None, alias="$ne", description="Anything else (a missing key too).")
    gt: RangeValue | None = Field(default=None, alias="$gt", description="Greater than (numbers, or strings by code point).")
    gte: RangeValue | None = Field(default=None, alias="$gte", description="Greater than or equal.")
    lt: RangeValue | None = Field(default=None, alias="$lt", description="Less than.")
    lte: RangeValue | None = Field(default=None, alias="$lte", description="Less than or equal.")
    in_: ValueList | None = Field(default=None, alias="$in", description="One of these values.")
    nin: ValueList | None = Field(default=None, alias="$nin", description="None of these values (a missing key too).")
    exists: StrictBool | None = Field(default=None, alias="$exists", description="Whether the key holds a scalar value.")
    near: Annotated[list[FiniteNumber], Field(min_length=3, max_length=3)] | None = Field(
        default=None, alias="$near", description="exif.location only: [lat, lon, km], within km (great circle)."
    )
    box: Annotated[list[FiniteNumber], Field(min_length=4, max_length=4)] | None = Field(
        default=None, alias="$box", description="exif.location only: [south, west, north, east] (west > east crosses 180)."
    )


def _plain_filter(value: Any) -> Any:
    """Operator objects as plain dicts, for :func:`semstore.conditions.check_filter`."""
    if isinstance(value, dict):
        return {
            key: item.model_dump(by_alias=True, exclude_none=True) if isinstance(item, FilterOperators) else item
            for key, item in value.items()
        }
    return value


Where = Annotated[
    dict[FilterKey, FilterValue | FilterOperators], BeforeValidator(_few_keys),
    Field(json_schema_extra={"maxProperties": MAX_FILTER_KEYS}),
    AfterValidator(_plain_filter), AfterValidator(check_filter),
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

#: Unknown fields named in a refusal (a body may hold thousands: one short error, not one each).
_UNKNOWN_FIELDS_SHOWN = 5


class _Model(BaseModel):
    """A request body: strict types (``k: true`` or ``"10"`` is refused), no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data: Any) -> Any:
        # Checked first and in one step: pydantic's own extra="forbid" reports every unknown
        # field separately, which for a body of 100,000 fields costs seconds and megabytes.
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                shown = ", ".join(repr(str(key)[:40]) for key in unknown[:_UNKNOWN_FIELDS_SHOWN])
                more = f" and {len(unknown) - _UNKNOWN_FIELDS_SHOWN} more" if len(unknown) > _UNKNOWN_FIELDS_SHOWN else ""
                raise ValueError(f"unknown field(s) {shown}{more}; allowed: {', '.join(cls.model_fields)}")
        return data


# -- collections ----------------------------------------------------------------------------------


class CollectionCreate(_Model):
    """A new collection: its name, encoder model and, optionally, a stored codec to reuse."""

    name: str = Field(pattern=NAME_PATTERN, examples=["photos"])
    model: Text | None = Field(
        default=None, max_length=128, description="open_clip model (default: the server's; see settings.allowed_models)."
    )
    pretrained: Text | None = Field(
        default=None, max_length=128, description="open_clip pretrained tag (default: the server's for its model)."
    )
    codec: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{8,128}$",
        description="Content hash of a stored codec (see POST /v1/codecs) to reuse instead of training one.",
    )


class CollectionOut(BaseModel):
    """A collection with its size and compression figures."""

    name: str
    items: int
    code_bytes: int
    bytes_per_item: float
    bits_per_vector: float | None
    bits_per_pixel: float | None
    model: str
    pretrained: str | None
    dim: int
    codec_hash: str | None
    codec_config: dict[str, Any] | None
    neural_decoder: bool = Field(default=False, description="Whether search re-ranks with the codec's neural decoder.")
    index_kind: str | None = Field(default=None, description="The loaded in-memory index, e.g. adc-pq (exhaustive ADC).")
    index_bytes_per_item: float | None = Field(default=None, description="RAM of the loaded index per item (codes + ids).")
    index_nlist: int | None = Field(default=None, description="Inverted lists of an IVF index.")
    index_nprobe: int | None = Field(default=None, description="Lists an IVF search scans.")
    metadata_keys_in_memory: list[str] = Field(
        default_factory=list, description="Metadata keys held in memory beside the index (filters on them need no SQL)."
    )
    metadata_bytes_per_item: float | None = Field(default=None, description="RAM of those metadata columns per item.")


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class CodecOut(BaseModel):
    """A stored codec."""

    content_hash: str
    dim: int
    num_subvectors: int
    codebook_size: int
    bits_per_vector: float


# -- items ----------------------------------------------------------------------------------------


class ItemOut(BaseModel):
    """A stored item; ``codes`` (base64 of the little-endian codes) and ``embedding`` on request."""

    id: int
    source_uri: str
    metadata: dict[str, Any]
    width: int | None
    height: int | None
    exif: dict[str, Any] = Field(default_factory=dict, description="Photo facts from the image's EXIF block (as in a search hit).")
    codes: str | None = None
    code_dtype: str | None = None
    embedding: list[float] | None = None


class MetadataPatch(_Model):
    """Metadata to merge into an item's (or to replace it with, if ``replace``)."""

    metadata: Metadata
    replace: bool = False


class IngestedFile(BaseModel):
    """What happened to one uploaded file or ingested path."""

    source: str
    status: Literal["added", "skipped", "failed"]
    id: int | None = None
    reason: str | None = None


class IngestOut(BaseModel):
    """The outcome of an upload or path ingest: counts and one entry per file."""

    added: int
    skipped: int
    failed: int
    files: list[IngestedFile]
    codec_trained: bool
    seconds: float


class PathIngest(_Model):
    """Server-side files or folders to ingest; each must lie under an allowed root."""

    paths: list[Annotated[Text, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=1000)
    metadata: Metadata | None = None


# -- search and classification --------------------------------------------------------------------


class SearchOptions(_Model):
    k: int = Field(default=10, ge=1, description="Number of results (at most the server's max page size).")
    min_score: FiniteFloat | None = Field(default=None, description="Drop hits scoring below this.")
    where: Where | None = Field(
        default=None,
        description='Metadata filter: every key must have this value, or satisfy its operators ({"$gte": 2020}, "$in", "$ne", "$exists", ...).',
    )
    rerank: int = Field(
        default=100, ge=0, le=10_000, description="ADC candidates re-scored exactly by cosine (0: raw ADC scores)."
    )


class SearchRequest(SearchOptions):
    """A text query or a stored item ("more like this"): give exactly one."""

    text: Text | None = Field(default=None, min_length=1, max_length=1000, examples=["a dog on a beach"])
    item_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class Hit(BaseModel):
    id: int
    score: float
    source_uri: str
    metadata: dict[str, Any]
    width: int | None
    height: int | None
    exif: dict[str, Any] = Field(
        default_factory=dict,
        description="Photo facts from the image's EXIF block: taken_at (local time, ISO 8601), make, model, lens, latitude, longitude, orientation, width, height.",
    )


class Timing(BaseModel):
    """Milliseconds spent embedding the query, searching, and in total."""

    embed_ms: float
    search_ms: float
    total_ms: float


class SearchOut(BaseModel):
    hits: list[Hit]
    query: Literal["text", "image", "item"]
    timing: Timing
    partial: bool = Field(
        default=False, description="True when some shards of a sharded deployment did not answer: their items are missing."
    )
    missing_shards: list[int] = Field(default_factory=list, description="The shards that did not answer (sharded deployments).")


def _check_template(template: str) -> str:
    if template.count("{}") != 1 or "{" in template.replace("{}", "", 1) or "}" in template.replace("{}", "", 1):
        raise ValueError("the template must contain '{}' exactly once and no other braces")
    return template


class ClassifyRequest(_Model):
    """Zero-shot classification of every item into one of ``labels``, paged."""

    labels: list[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(min_length=2, max_length=1000)
    template: Annotated[Text, Field(min_length=2, max_length=500), AfterValidator(_check_template)] = "a photo of a {}."
    offset: int = Field(default=0, ge=0, le=MAX_ID)
    limit: int | None = Field(
        default=None, ge=1, description="Items per page (default 100; at most the server's max page size)."
    )


class LabelledItem(BaseModel):
    id: int
    label: str
    score: float


class ClassifyOut(BaseModel):
    labels: list[str]
    counts: dict[str, int]
    total: int
    offset: int
    limit: int
    items: list[LabelledItem]


# -- transfer -------------------------------------------------------------------------------------


class ImportOut(BaseModel):
    name: str
    created: bool
    added: int
    skipped: int
    codec_hash: str


# -- health ---------------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    index: Literal["ready"]
    version: str
