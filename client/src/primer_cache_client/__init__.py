"""primer-cache-client: the MegaMind primer server's read path, exact to the sidecar's
invalidations (README.md beside this package)."""

from primer_cache_client.aio import AsyncPrimerCache
from primer_cache_client.cache import PrimerCache
from primer_cache_client.options import Options
from primer_cache_client.query import PrimerQuery

__all__ = ["AsyncPrimerCache", "Options", "PrimerCache", "PrimerQuery"]
