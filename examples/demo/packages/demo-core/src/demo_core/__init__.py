"""Models of the demo site."""

__version__ = "0.3.0"
