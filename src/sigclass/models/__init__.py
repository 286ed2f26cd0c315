"""Networks: one registry (:func:`create_model`, :func:`list_models`) and one backbone/head contract."""

from .catalog import create_model, is_model, list_models, model_entry
from .registry import register_model

__all__ = ["create_model", "is_model", "list_models", "model_entry", "register_model"]
