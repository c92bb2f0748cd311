"""Configuration: default.yml, overridden by AUTHENTIK_* environment variables."""

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULTS = Path(__file__).parent / "default.yml"


def load() -> dict[str, Any]:
    """The defaults with environment overrides (AUTHENTIK_POSTGRESQL__HOST and the like)."""
    config: dict[str, Any] = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))
    for key, value in os.environ.items():
        if key.startswith("AUTHENTIK_"):
            path = key.removeprefix("AUTHENTIK_").lower().split("__")
            node = config
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
    return config


CONFIG = load()
