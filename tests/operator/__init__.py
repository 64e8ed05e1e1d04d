"""Tests of the CacheInvalidationPolicy operator (operator/cache_operator)."""
