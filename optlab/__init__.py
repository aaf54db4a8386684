"""optlab: see and measure inference optimization."""
__version__ = "0.1.0"
