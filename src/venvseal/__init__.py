"""venvseal: turn a uv-locked Python application into a hermetic, hash-pinned closure."""

__version__ = "0.1.0"
