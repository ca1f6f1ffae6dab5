"""Kartoteka's HTTP API: a FastAPI app generated from an engine (`create_app`)."""

from api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
