"""catalog: the Starlette catalog service, read through the hybrid cache.

Many replicas share one database (the truth) and one Redis (L2 + backplane);
each keeps an in-process L1. See services/catalog/README.md.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
