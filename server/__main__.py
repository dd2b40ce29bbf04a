"""``python -m server``: the HTTP server with settings from ``SEMSTORE_*`` variables (as ``semstore serve``)."""

from semstore.config import get_settings
from server.app import check_settings
from server.serving import serve

if __name__ == "__main__":
    settings = get_settings()
    check_settings(settings)
    serve(settings)
