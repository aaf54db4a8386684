"""Instruments read a candidate without changing it: latency (timing, cold start,
footprint, environment, pipeline profile) and quality (metrics, agreement, portability)."""
