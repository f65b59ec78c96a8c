"""Routers of the approvals sidecar, one per resource (pages.py renders the HTML pages)."""
