"""Serving: an OpenAI- and OIP v2-compatible HTTP server with request batching, and its stop control."""
