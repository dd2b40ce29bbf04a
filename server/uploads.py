"""Reading multipart uploads and JSON form fields within the server's limits."""

from __future__ import annotations

import json
from typing import Any

from fastapi import UploadFile
from pydantic import TypeAdapter, ValidationError

from semstore.ingest.images import BadImageError, decoded_pixels
from server.errors import ApiError
from server.schemas import Metadata, Where

_metadata = TypeAdapter(Metadata)
_where = TypeAdapter(Where)


async def read_uploads(files: list[UploadFile], max_files: int) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of each upload; 413 ``too_many_images`` past ``max_files``.

    The total size is already bounded by the body size limit.
    """
    if len(files) > max_files:
        raise ApiError(
            413, "too_many_images", f"{len(files)} files in one request; the limit is {max_files}", {"max_images": max_files}
        )
    return [(upload.filename or "image", await upload.read()) for upload in files]


def check_request_pixels(named: list[tuple[str, bytes]], *, max_pixels: int, max_image_pixels: int, min_edge: int | None) -> None:
    """413 ``too_many_pixels`` when the images of one request would decode to more than ``max_pixels``.

    Read from each header (as decoded, JPEGs at the model's scale) before anything is
    decoded; an image whose header is already bad counts nothing (it fails on its own).
    """
    total = 0
    for _, data in named:
        try:
            total += decoded_pixels(data, max_pixels=max_image_pixels, min_edge=min_edge)
        except BadImageError:
            continue
    if total > max_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"the images of this request decode to {total} pixels; the limit is {max_pixels} per request",
            {"max_request_pixels": max_pixels},
        )


def parse_json_field(field: str, text: str | None, adapter: TypeAdapter[Any]) -> Any:
    """A JSON form field validated by ``adapter`` (None when absent); 422 when invalid."""
    if text is None or not text.strip():
        return None
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        problems = [
            {"loc": [field, *(str(part) for part in error["loc"])], "msg": error["msg"], "type": error["type"]}
            for error in exc.errors()
        ]
        raise ApiError(422, "validation_error", f"invalid {field}: {problems[0]['msg']}", problems) from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise ApiError(422, "validation_error", f"{field} must be JSON: {exc}") from None


def parse_metadata_field(text: str | None) -> dict[str, Any] | None:
    """The ``metadata`` form field: a JSON object of metadata for every uploaded image."""
    return parse_json_field("metadata", text, _metadata)


def parse_where_field(text: str | None) -> dict[str, Any] | None:
    """The ``where`` form field: a JSON object of metadata values every hit must have."""
    return parse_json_field("where", text, _where)


def check_page_size(field: str, value: int, maximum: int) -> None:
    """422 when a requested page size / k exceeds the server's cap."""
    if value > maximum:
        raise ApiError(
            422,
            "validation_error",
            f"{field} must be at most {maximum}",
            [{"loc": ["body", field], "msg": f"must be at most {maximum}", "type": "less_than_equal"}],
        )
