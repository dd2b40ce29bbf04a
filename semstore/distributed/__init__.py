"""Past one machine: ingest on a Ray cluster, and keeping replicas' indexes in step.

Ray is imported only when a distributed ingest runs (``pip install "semstore[distributed]"``);
importing this package never needs it.
"""

from semstore.distributed.ray_ingest import (
    INSTALL_HINT,
    RayClusterError,
    RayIngestOptions,
    RayNotInstalledError,
    ray_ingest,
    require_ray,
)
from semstore.distributed.stages import FailOnce

__all__ = [
    "INSTALL_HINT",
    "FailOnce",
    "RayClusterError",
    "RayIngestOptions",
    "RayNotInstalledError",
    "ray_ingest",
    "require_ray",
]
