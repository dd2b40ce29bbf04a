"""The API's routers, one module per resource."""

from server.routers import collections, items, page, search, system

__all__ = ["collections", "items", "page", "search", "system"]
