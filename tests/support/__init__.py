"""Helpers shared by every test suite: private servers on free ports."""
