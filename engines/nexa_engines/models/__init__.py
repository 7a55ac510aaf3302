"""Causal language models for the ML engines: tiny models from a config, loading by any reference, prompts."""
