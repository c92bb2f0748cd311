"""Views of the demo site."""

__version__ = "0.2.0"


def info() -> None:
    """Print where this package runs from (an entry point for the closure's bin/)."""
    import sys

    print(f"demo-api {__version__} on {sys.executable}")
