"""authentik flows (stand-in)."""
