"""Teachers: OpenAI-compatible endpoints, Nexa deployments and local models behind one interface."""
