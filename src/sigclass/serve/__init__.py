"""The scoring service: ``create_app`` builds a FastAPI app around one trained model."""

from __future__ import annotations

from .settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]


def create_app(settings: Settings | None = None):
    """The FastAPI app for ``settings`` (see :func:`sigclass.serve.app.create_app`)."""
    from .app import create_app as _create_app  # imports FastAPI: only when an app is built

    return _create_app(settings)
