"""A consistency checker for catalog replicas: measures stale reads against each
data type's ``maxStaleness`` (``python -m catalog_checker --help``)."""

from .checker import CHECKED, Checker, History, Moves, TypeStats

__all__ = ["CHECKED", "Checker", "History", "Moves", "TypeStats"]
