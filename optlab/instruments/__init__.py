"""Instruments read a candidate without changing it: latency (timing, cold start,
footprint, environment, pipeline profile, ONNX Runtime operator profile) and quality
(metrics, agreement, portability)."""
