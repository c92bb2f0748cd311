"""The demo site: settings and URLs."""
