"""OpenAPI document for the admin API (filled in with every route)."""

from __future__ import annotations

from typing import Any

from flask import Flask


def openapi_document(app: Flask) -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "xconsumer admin API", "version": "0.1.0"},
            "paths": {}}
