"""Fixtures for the integration tier (registered from gateway_app)."""

from tests.integration.gateway_app import gateway, sqlite_gateway

__all__ = ["gateway", "sqlite_gateway"]
