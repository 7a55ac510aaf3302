"""``python -m nexa_operator``: run the operator (one replica) against the configured cluster.

``--namespace`` may repeat to watch only those namespaces; the default is every
namespace. Health: ``/healthz`` on ``--health-port`` (kopf's liveness probe);
metrics: ``/metrics`` on ``NEXA_OPERATOR_METRICS_PORT`` (default 9090, 0 disables).
"""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from nexa import logs
from nexa_operator.config import ConfigError

# Not 8080: that is where `nexa up` puts the gateway, and both may run on one laptop.
DEFAULT_HEALTH_PORT = 8081


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nexa_operator", description=__doc__)
    parser.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    parser.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        logs.configure("operator", logging.DEBUG if args.verbose else logging.INFO)
    except ValueError as exc:
        print(f"nexa-operator: {exc}", file=sys.stderr)
        return 2
    try:
        import nexa_operator.handlers as handlers  # registers the handlers
    except ConfigError as exc:
        print(f"nexa-operator: {exc}", file=sys.stderr)
        return 2
    handlers.NAMESPACES[:] = args.namespace
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
