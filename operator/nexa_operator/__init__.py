"""The Nexa operator: reconciles NexaJob and NexaEndpoint resources into Kubernetes objects.

Layers: ``builders`` and ``reconcile`` are pure (dicts in, dicts out); ``kube`` is
the only module that talks to the Kubernetes API; ``handlers`` are thin kopf
handlers that read, decide with the pure layer, and write.
"""

__all__: list[str] = []
