"""The semstore HTTP server: ``create_app(settings)`` builds the FastAPI application."""

from server.app import create_app

__all__ = ["create_app"]
