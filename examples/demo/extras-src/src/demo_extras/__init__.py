"""A package the demo installs from a git repository."""

__version__ = "0.1.0"


def main() -> None:
    """Say hello (an entry point of a git-sourced package)."""
    print(f"demo-extras {__version__}")
