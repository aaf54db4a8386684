"""Offline data generators; installed as `optlab.data.generators` (see pyproject's package-dir)."""
