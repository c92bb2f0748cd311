"""A stand-in for authentik's Django application (what venvseal's flagship example builds)."""

__version__ = "2026.5.0"
