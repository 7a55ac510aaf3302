"""The gateway app: routers, error handlers, metrics, and the lease reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from nexa import __version__, logs
from nexa.contracts.keys import Role
from nexa_gateway.backends import SqlJobBackend
from nexa_gateway.bodylimit import BodyLimit
from nexa_gateway.db import Database, utcnow
from nexa_gateway.errors import ERROR_RESPONSES, install_error_handlers
from nexa_gateway.fastpath import StatusFastPath
from nexa_gateway.metrics import GatewayMetrics, MetricsMiddleware
from nexa_gateway.ratelimit import RateLimiter
from nexa_gateway.routes import (
    admin,
    artifacts,
    benchmarks,
    billing,
    console,
    datasets,
    deployments,
    forge,
    health,
    inference,
    jobs,
    keys,
    mesh,
    models,
    nodes,
    pipelines,
    registry,
    submit,
    webhooks,
    worker_store,
    workers,
)
from nexa_gateway.routes import (
    auditlog as auditlog_routes,
)
from nexa_gateway.services import (
    auditlog,
    deletion,
    deploymeter,
    endpointkeys,
    grants,
    jobsignals,
    logarchive,
    meshpolicy,
    queue,
    schedulability,
    signing,
    storagemeter,
    stripesync,
    verification,
)
from nexa_gateway.services import pipelines as pipeline_svc
from nexa_gateway.services import webhooks as webhook_svc
from nexa_gateway.services.auditlog import AuditMiddleware
from nexa_gateway.services.jobcache import JobCache
from nexa_gateway.services.jobs import count_by_state
from nexa_gateway.services.keys import KeyResolver, ensure_tenant, set_role, store_api_key
from nexa_gateway.settings import Settings
from nexa_gateway.state import AppState, build_store

log = logging.getLogger("nexa.gateway")


def _operation_id(route: APIRoute) -> str:
    return route.name


def _bootstrap(state: AppState) -> None:
    state.db.create_schema()
    if signing.signing_enabled(state.settings):
        platform_key = signing.load_or_create_key(state.settings)
        with state.db.session() as session:
            state.trust = signing.record(session, platform_key)
        state.platform_key = platform_key
        # The gateway's own commits (uploads) are signed as they are written.
        policy = getattr(state.store, "policy", None)
        if policy is not None:
            policy.signing_key = platform_key
    with state.db.session() as session:
        deletion.mark_index_start(session)  # from now on every artifact's inputs are indexed
    if state.settings.backend == "sql":
        state.endpoint_secret = endpointkeys.load_or_create_secret(state.settings)
    key = state.settings.bootstrap_api_key
    if key:
        with state.db.session() as session:
            tenant = ensure_tenant(session, "default")
            # The operator's own key: it may also grant tenants local roots and buckets.
            info = store_api_key(
                session, key, tenant_id=tenant.id, name="bootstrap", role=Role.platform_admin
            )
            set_role(session, info.key_id, Role.platform_admin)
            if state.settings.bootstrap_grant_local_roots:
                for root in state.settings.allowed_dataset_roots:
                    grants.grant(session, state.settings, tenant.id, "local_root", str(root))


def _reap_once(state: AppState) -> None:
    with state.db.session() as session:
        reaped = queue.reap_expired(
            session,
            lambda job_type, status: state.metrics.jobs_finished.labels(job_type, status).inc(),
            credit=meshpolicy.credit_policy(state.settings),
        )
        related = verification.related(session, reaped.changed)
    state.job_changed([*reaped.changed, *related])
    for job in reaped.finished:
        state.metrics.observe_job_finished(job)
    if reaped.lease_expired:
        state.metrics.leases_expired.inc(reaped.lease_expired)
    interval = state.settings.schedulability_interval_seconds
    if interval > 0 and time.monotonic() >= state.next_schedulability_sweep:
        state.next_schedulability_sweep = time.monotonic() + interval
        with state.db.session() as session:
            marked = schedulability.sweep(session, utcnow(), state.settings.lease_seconds)
        state.job_changed(marked)


async def _reaper(state: AppState) -> None:
    while True:
        try:
            await run_in_threadpool(_reap_once, state)
        except Exception:  # the reaper must outlive a database blip; the next tick retries
            log.exception("lease reaper tick failed")
        await asyncio.sleep(state.settings.reaper_interval_seconds)


def _archive_logs_once(state: AppState) -> int:
    with state.db.session() as session:
        done = logarchive.archive_pending(session, state.store)
    state.jobs.invalidate(done)  # their status now names the log file
    return len(done)


async def _log_archiver(state: AppState) -> None:
    while True:
        try:
            archived = await run_in_threadpool(_archive_logs_once, state)
        except Exception:  # the store or the database may be down for a while; the next tick retries
            log.exception("log archive tick failed")
            archived = 0
        if archived < logarchive.BATCH:
            await asyncio.sleep(state.settings.log_archive_interval_seconds)


def _meter_deployments_once(state: AppState) -> None:
    with state.db.session() as session:
        metered = deploymeter.meter_stopped(session, state.store)
    state.jobs.invalidate(metered)


async def _deployment_meter(state: AppState) -> None:
    while True:
        try:
            await run_in_threadpool(_meter_deployments_once, state)
        except Exception:  # the store or the database may be down for a while; the next tick retries
            log.exception("deployment meter tick failed")
        await asyncio.sleep(state.settings.deployment_meter_interval_seconds)


def _meter_storage_once(state: AppState) -> None:
    storagemeter.count_metrics(state, storagemeter.tick(state))


async def _storage_meter(state: AppState) -> None:
    interval = state.settings.storage_meter_interval_seconds
    while True:
        try:
            await run_in_threadpool(_meter_storage_once, state)
        except Exception:  # the store or the database may be down for a while; the next tick retries
            log.exception("storage meter tick failed")
        await asyncio.sleep(storagemeter.seconds_to_next_tick(interval))


def _sync_stripe_once(state: AppState, client: Any) -> int:
    with state.db.session() as session:
        return stripesync.sync_meter_events(session, client)


async def _stripe_sync(state: AppState, client: Any) -> None:
    while True:
        try:
            moved = await run_in_threadpool(_sync_stripe_once, state, client)
        except Exception:  # Stripe or the database may be down for a while; the cursor keeps the place
            log.exception("Stripe meter-event sync tick failed")
            moved = 0
        if moved < stripesync.BATCH:
            await asyncio.sleep(state.settings.stripe_sync_interval_seconds)


def _webhooks_once(state: AppState, client: Any, outbox: bool) -> int:
    """One outbox pass (job events → deliveries) and one send pass; how much work it found."""
    db, settings = state.db, state.settings
    moved = 0
    if outbox:
        settle = settings.webhook_outbox_settle_seconds if db.is_postgres else 0.0
        with db.read() as session:
            fresh = webhook_svc.has_new_events(session)
            fresh_pipelines = webhook_svc.has_new_pipeline_events(session)
        if fresh:
            with db.session() as session:
                moved = webhook_svc.fan_out(session, settle_seconds=settle, lock=db.is_postgres)
        if fresh_pipelines:
            with db.session() as session:
                moved = max(
                    moved, webhook_svc.fan_out_pipelines(session, settle_seconds=settle, lock=db.is_postgres)
                )
    # Straight on to the next pass only while a backlog is left; otherwise the loop sleeps its interval.
    backlog = moved if moved >= webhook_svc.BATCH else 0
    with db.read() as session:
        due = webhook_svc.has_due(session)
    if not due:
        return backlog
    with db.session() as session:
        claimed = webhook_svc.claim_due(
            session, lease_seconds=settings.webhook_timeout_seconds + 30, skip_locked=db.is_postgres
        )
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(claimed)))) as pool:
        results = list(pool.map(lambda c: (c, webhook_svc.send(client, c)), claimed))
    for one, result in results:
        with db.session() as session:
            webhook_svc.record_try(session, settings, one, result)
    return backlog + len(claimed)


async def _audit_flusher(state: AppState) -> None:
    """Write the audit entries the middleware queued, every ``audit_flush_seconds``."""
    while True:
        await asyncio.sleep(state.settings.audit_flush_seconds)
        if len(state.audit):
            try:
                await run_in_threadpool(auditlog.flush, state.db, state.audit)
            except Exception:  # the database is down: the entries stay queued for the next tick
                log.exception("audit log flush failed")


def _active_pipelines(state: AppState, after: str) -> list[str]:
    with state.db.read() as session:
        return pipeline_svc.active_ids(session, after)


# A pipeline whose advance raises this many passes in a row is failed with the error, so one bad
# pipeline is visible to its owner instead of retried forever.
PIPELINE_ERROR_LIMIT = 5


def _fail_stuck_pipeline(state: AppState, pipeline_id: str, error: str) -> None:
    with state.db.session() as session:
        pipeline_svc.fail_stuck(session, pipeline_id, f"the platform could not advance it: {error}")
        session.commit()


async def _advance_all(state: AppState, errors: dict[str, int]) -> None:
    """One pass over every pipeline that can move, page by page; each pipeline on its own, so one
    that raises holds up no other."""
    after = ""
    while page := await run_in_threadpool(_active_pipelines, state, after):
        for pipeline_id in page:
            try:
                if await pipeline_svc.advance(state, pipeline_id):
                    state.signals.notify([pipeline_id])
                errors.pop(pipeline_id, None)
            except Exception as exc:  # a bug or a bad row: logged, retried, and after a few passes failed
                log.exception("pipeline %s: advance failed", pipeline_id)
                errors[pipeline_id] = errors.get(pipeline_id, 0) + 1
                if errors[pipeline_id] >= PIPELINE_ERROR_LIMIT:
                    errors.pop(pipeline_id)
                    await run_in_threadpool(
                        _fail_stuck_pipeline, state, pipeline_id, f"{type(exc).__name__}: {exc}"[:500]
                    )
        after = page[-1]


async def _pipeline_advancer(state: AppState) -> None:
    """Advance every unfinished pipeline; a job's change (any job: this loop does not know which
    step is whose) or a pipeline request wakes it, the interval is a safety net."""
    interval = state.settings.pipeline_interval_seconds
    errors: dict[str, int] = {}
    with state.signals.subscribe(jobsignals.ANY) as changed:
        while True:
            changed.clear()  # before reading: a change during the pass wakes the next wait
            try:
                await _advance_all(state, errors)
            except Exception:  # the database is down: the next pass retries
                log.exception("pipeline advance pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), interval)


async def _webhook_sender(state: AppState) -> None:
    client = webhook_svc.make_client(state.settings)
    outbox = state.settings.backend == "sql"  # job events are SQL rows only there
    try:
        while True:
            try:
                busy = await run_in_threadpool(_webhooks_once, state, client, outbox)
            except Exception:  # the database or a receiver may be down for a while; the next tick retries
                log.exception("webhook tick failed")
                busy = 0
            if not busy:
                await asyncio.sleep(state.settings.webhook_interval_seconds)
    finally:
        client.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build a gateway app; nothing touches the database until startup."""
    settings = settings or Settings()
    db = Database(settings.database_url)
    metrics = GatewayMetrics()
    state = AppState(
        settings=settings,
        db=db,
        store=build_store(settings),
        metrics=metrics,
        limiter=RateLimiter(settings.rate_limit_per_minute),
        keys=KeyResolver(settings.key_cache_seconds),
        jobs=JobCache(settings.status_cache_seconds),
    )

    def _states() -> list[tuple[str, str, int]]:
        with db.read() as session:
            return count_by_state(session)

    metrics.add_state_collector(_states)
    if settings.backend == "kubernetes":
        from nexa_gateway.backends.kubernetes import KubernetesJobBackend

        state.backend = KubernetesJobBackend(
            state,
            namespace_prefix=settings.kube_namespace_prefix,
            kubeconfig=settings.kubeconfig,
            create_namespaces=settings.kube_create_namespaces,
        )
    else:
        state.backend = SqlJobBackend(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_bootstrap, state)
        state.signals.bind(asyncio.get_running_loop())
        tasks = [asyncio.create_task(_reaper(state))]
        if settings.backend == "sql" and settings.log_archive_interval_seconds > 0:
            tasks.append(asyncio.create_task(_log_archiver(state)))
        if settings.backend == "sql" and settings.deployment_meter_interval_seconds > 0:
            tasks.append(asyncio.create_task(_deployment_meter(state)))
        if settings.storage_meter_interval_seconds > 0:  # artifacts are SQL rows in both modes
            tasks.append(asyncio.create_task(_storage_meter(state)))
        stripe_client = stripesync.make_client(settings)
        if stripe_client is not None and settings.stripe_sync_interval_seconds > 0:
            tasks.append(asyncio.create_task(_stripe_sync(state, stripe_client)))
        if settings.webhook_interval_seconds > 0:
            tasks.append(asyncio.create_task(_webhook_sender(state)))
        if settings.backend == "sql" and settings.pipeline_interval_seconds > 0:
            tasks.append(asyncio.create_task(_pipeline_advancer(state)))
        if db.is_postgres and settings.backend == "sql":
            # Log streams on this replica hear of lines and ends that reach another one.
            tasks.append(asyncio.create_task(jobsignals.listen(settings.database_url, state.signals)))
        tasks.append(asyncio.create_task(_audit_flusher(state)))
        try:
            yield
        finally:
            await state.backend.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:  # what the last actions queued
                await run_in_threadpool(auditlog.flush, db, state.audit)
            except Exception:
                log.exception("audit log: the last entries could not be written")
            db.dispose()

    app = FastAPI(
        title="Nexa",
        version=__version__,
        description="Run the model pipeline (audit, distill, generate, train, evaluate, deploy) as remote jobs.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.nexa = state
    install_error_handlers(app)
    app.add_exception_handler(deletion.InUse, deletion.in_use_response)  # 409 listing the dependents
    app.add_middleware(AuditMiddleware, queue=state.audit)
    # Added first so it runs inside the metrics middleware: shortcut answers are counted too.
    app.add_middleware(StatusFastPath, state=state)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(billing.estimate_router, responses=ERROR_RESPONSES)  # before /v1/{type} routes match
    for module in (submit, jobs):
        app.include_router(module.router, responses=ERROR_RESPONSES)
        app.include_router(module.spec_router, responses=ERROR_RESPONSES)
    for module in (
        datasets,
        models,
        billing,
        artifacts,
        deployments,
        inference,
        keys,
        nodes,
        admin,
        registry,
        mesh,
        workers,
        benchmarks,
        worker_store,
        forge,
        webhooks,
        pipelines,
        console,
        auditlog_routes,
    ):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(health.router, responses={503: ERROR_RESPONSES[422] | {"description": "Not ready."}})
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from ``NEXA_*`` variables."""
    logs.configure("gateway")
    return create_app(Settings())
