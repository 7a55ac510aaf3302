"""The operator's settings, read once from ``NEXA_OPERATOR_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from nexa import __version__
from nexa.contracts.catalog import CATALOG_SETTING, CatalogError, parse_catalog
from nexa.contracts.nexajob import tenant_namespace

DEFAULT_REGISTRY = "ghcr.io/nexa"


class ConfigError(ValueError):
    """A setting has a value the operator cannot use; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return value


@dataclass(frozen=True)
class OperatorConfig:
    """How NexaJobs become Kubernetes objects; one instance per operator process."""

    cpu_image: str = f"{DEFAULT_REGISTRY}/engine-cpu:{__version__}"
    cuda_image: str = f"{DEFAULT_REGISTRY}/engine-cuda:{__version__}"
    serving_image: str = f"{DEFAULT_REGISTRY}/engine-cuda:{__version__}"
    s3_secret: str | None = "nexa-s3"  # Secret holding the artifact store's credentials
    s3_access_key_key: str = "NEXA_S3_ACCESS_KEY"  # its key with the access key
    s3_secret_key_key: str = "NEXA_S3_SECRET_KEY"  # its key with the secret key
    # NEXA_S3_ENDPOINT …, NEXA_MODEL_CATALOG: settings passed on to engine and serving pods.
    store_env: dict[str, str] = field(default_factory=dict)
    tier_label: str = "nexa.run/tier"
    gpu_type_label: str = "nvidia.com/gpu.product"
    kueue_queue: str | None = None
    ttl_seconds_after_finished: int = 3600
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 300.0
    resync_seconds: float = 30.0
    progress_seconds: float = 10.0  # how often a running attempt's progress record is read
    service_account: str | None = None  # the namespace default when unset
    image_pull_policy: str = "IfNotPresent"
    gateway_url: str | None = None  # serving pods check tenants' API keys with this gateway
    # With both set, engine pods of the gateway's tenant namespaces (<prefix><tenant>) reach the
    # store through the gateway with an attempt token (nexa.attempttokens) instead of S3 keys.
    attempt_token_secret: bytes | None = field(default=None, repr=False)
    gateway_namespace_prefix: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Settings from the environment; ``ConfigError`` names a bad variable."""
        env = os.environ if env is None else env
        prefix = "NEXA_OPERATOR_"
        store_env = {
            k: v
            for k, v in env.items()
            if k
            in (
                "NEXA_S3_ENDPOINT",
                "NEXA_S3_BUCKET",
                "NEXA_S3_PREFIX",
                "NEXA_S3_SECURE",
                "NEXA_S3_REGION",
                CATALOG_SETTING,
            )
            and v
        }
        try:
            parse_catalog(store_env.get(CATALOG_SETTING))
        except CatalogError as exc:
            raise ConfigError(str(exc)) from exc
        return cls(
            cpu_image=env.get(prefix + "CPU_IMAGE") or cls.cpu_image,
            cuda_image=env.get(prefix + "CUDA_IMAGE") or cls.cuda_image,
            serving_image=env.get(prefix + "SERVING_IMAGE") or cls.serving_image,
            s3_secret=env.get(prefix + "S3_SECRET", "nexa-s3") or None,
            s3_access_key_key=env.get(prefix + "S3_ACCESS_KEY_KEY") or cls.s3_access_key_key,
            s3_secret_key_key=env.get(prefix + "S3_SECRET_KEY_KEY") or cls.s3_secret_key_key,
            store_env=store_env,
            tier_label=env.get(prefix + "TIER_LABEL") or cls.tier_label,
            gpu_type_label=env.get(prefix + "GPU_TYPE_LABEL") or cls.gpu_type_label,
            kueue_queue=env.get(prefix + "KUEUE_QUEUE") or None,
            ttl_seconds_after_finished=_int(env, prefix + "JOB_TTL_SECONDS", 3600),
            retry_base_seconds=_float(env, prefix + "RETRY_BASE_SECONDS", 10.0),
            retry_max_seconds=_float(env, prefix + "RETRY_MAX_SECONDS", 300.0),
            resync_seconds=_float(env, prefix + "RESYNC_SECONDS", 30.0),
            progress_seconds=_float(env, prefix + "PROGRESS_SECONDS", 10.0),
            service_account=env.get(prefix + "SERVICE_ACCOUNT") or None,
            image_pull_policy=env.get(prefix + "IMAGE_PULL_POLICY") or cls.image_pull_policy,
            gateway_url=env.get(prefix + "GATEWAY_URL") or None,
            attempt_token_secret=(env.get(prefix + "ATTEMPT_TOKEN_SECRET") or "").encode() or None,
            gateway_namespace_prefix=env.get(prefix + "GATEWAY_NAMESPACE_PREFIX") or None,
        )

    def pods_use_gateway_store(self, namespace: str, tenant: str | None) -> bool:
        """Whether an engine pod in ``namespace`` for ``tenant`` gets an attempt token, not S3 keys.

        Only NexaJobs the gateway made (its tenant's own namespace) qualify: the gateway
        checks a token against the NexaJob it finds there. Others keep the direct store.
        """
        return bool(
            self.attempt_token_secret
            and self.gateway_url
            and self.gateway_namespace_prefix
            and tenant
            and namespace == tenant_namespace(self.gateway_namespace_prefix, tenant)
        )
