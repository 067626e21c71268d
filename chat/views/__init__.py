"""Blueprints: pages (HTML), api (JSON + SSE), health."""
