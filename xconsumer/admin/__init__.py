"""Admin HTTP: a Flask app factory and the thread that serves it."""

from .app import create_app
from .server import AdminServer

__all__ = ["AdminServer", "create_app"]
