"""authentik core (stand-in)."""
