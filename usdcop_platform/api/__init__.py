"""FastAPI sidecar: approvals API + review pages (second vote), health; see app.create_app."""
