"""cache_operator: the kopf operator for CacheInvalidationPolicy resources.

It validates policies, publishes them to Redis and on the hybridcache
backplane (``hybridcache.keys``, ``.wire`` and ``.policy`` are the only parts of
hybridcache it uses, never the cache),
and exports the fleet's cache health in status and on ``/metrics``.
"""

__version__ = "0.1.0"
