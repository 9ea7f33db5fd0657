"""The application factory: ``create_app(settings)``; the lifespan owns every session and batcher."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import ResponseHeader, State
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme, Tag

from service.http.api_docs import CONTENT_SECURITY_POLICY, SwaggerPage
from service.http.auth import SECURITY_SCHEME, AccessPolicy, AuditTrail, declared_access, requires
from service.http.error_responses import EXCEPTION_HANDLERS
from service.http.infer_fast_path import InferFastPath, infer_target
from service.http.middleware import RequestMiddleware
from service.http.routes.examples import ExamplesController
from service.http.routes.health import HealthController
from service.http.routes.inspection import InspectionController
from service.http.routes.metrics import MetricsController
from service.http.routes.models import ModelsController
from service.http.routes.repository import RepositoryController
from service.http.routes.ui import UiController
from service.http.routes.weights import WeightsController, provide_weight_store
from service.inspection.inspector import Inspector
from service.ops.logs import configure_logging
from service.ops.prometheus import ServiceMetrics
from service.ops.run_dir import private_run_dir
from service.ops.shutdown import on_stop_signal
from service.ops.supervisor import PoolStatus, worker_context
from service.serving.follower import follow_supervisor, start_in_process
from service.serving.registry import ModelRegistry
from service.serving.triton_stats import StatsBook
from service.settings import Settings
from service.weights.store import WeightStore

# Extensions of GET /v2, only those really implemented.
EXTENSIONS = (
    "binary_tensor_data",
    "model_repository",
    "statistics",
    "model_configuration",
    "weights",
    "activations",
    "explain",
    "evaluate",
)


class ServiceApp(Litestar):
    """Litestar, with inference requests handed straight to the request middleware's infer path.

    Litestar's own entry (scope keys for its routing, a wrapped ``send``) serves nothing that path
    uses, and every inference request would pay for it. Every other request enters Litestar as usual.
    """

    request_middleware: RequestMiddleware | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        middleware = self.request_middleware
        if middleware is not None and scope["type"] == "http" and scope["method"] == "POST":
            target = infer_target(scope["path"])
            if target is not None:
                await middleware.infer(scope, receive, send, target)
                return
        await super().__call__(scope, receive, send)


def provide_registry(state: State) -> ModelRegistry:
    registry: ModelRegistry = state.registry
    return registry


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def _report_pool(metrics: ServiceMetrics, pool: PoolStatus) -> None:
    metrics.workers.set(pool.configured)
    metrics.workers_ready.set(pool.ready)
    metrics.worker_restarts.set(pool.restarts)
    metrics.workers_crash_looping.set(len(pool.crash_looping))


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: ServiceMetrics = app.state.metrics
    pool: PoolStatus = app.state.workers
    supervisor = worker_context()
    with contextlib.ExitStack() as owned:
        # One worker: this process owns the working folder. Several: the supervisor does.
        run_dir = supervisor.run_dir if supervisor else owned.enter_context(private_run_dir(settings.state_dir))
        stats = StatsBook(run_dir / "stats", writer=str(os.getpid()))
        owned.callback(stats.close)
        registry = ModelRegistry(settings, stats, metrics=metrics)
        app.state.registry = registry
        app.state.weights = WeightStore(settings.weights)
        owned.callback(app.state.weights.close)
        app.state.inspector = Inspector(settings.inspection)
        _report_pool(metrics, pool)

        def pool_changed(report: dict[str, Any]) -> None:
            pool.update(report)
            _report_pool(metrics, pool)

        # Entered once this process serves the repository state decided for the whole server.
        link = (
            follow_supervisor(registry, supervisor, pool_changed)
            if supervisor is not None
            else start_in_process(registry, settings, run_dir)
        )
        try:
            async with link:
                # Everything built so far lives as long as the process: keep the collector from
                # rescanning it, since a full collection over the frameworks' objects stalls every
                # request for tens of ms.
                gc.collect()
                gc.freeze()
                with on_stop_signal(registry.begin_shutdown):
                    yield
        finally:
            await registry.drain(settings.drain_timeout_s)
            await registry.aclose()


def served_models(app: Litestar) -> list[dict[str, Any]]:
    """What this process serves once started, for the startup line: every version with the execution
    providers its session runs on."""
    registry: ModelRegistry = app.state.registry
    return [
        {"name": lv.name, "version": str(lv.version), "providers": list(lv.model.providers)}
        for lv in sorted(registry.loaded(), key=lambda lv: (lv.name, lv.version))
    ]


def create_app(settings: Settings | None = None) -> ServiceApp:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics = ServiceMetrics()
    access = AccessPolicy.from_settings(settings, metrics)
    app = ServiceApp(
        route_handlers=[
            HealthController,
            ModelsController,
            ExamplesController,
            RepositoryController,
            InspectionController,
            UiController,
            WeightsController,
            MetricsController,
        ],
        dependencies={
            "registry": Provide(provide_registry, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "weights": Provide(provide_weight_store, sync_to_thread=False),
        },
        lifespan=[_lifespan],
        state=State(
            {"settings": settings, "extensions": list(EXTENSIONS), "metrics": metrics, "workers": PoolStatus()}
        ),
        guards=[access.guard],
        middleware=[DefineMiddleware(AuditTrail, policy=access)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="weightserve",
            version="0.1.0",
            description=_API_DESCRIPTION,
            tags=_TAGS,
            use_handler_docstrings=True,
            # Swagger UI from this origin, never a CDN: the page works offline and in closed clusters.
            render_plugins=[SwaggerPage()],
            # The API's description is no secret, and Swagger UI fetches it without credentials.
            openapi_router=Router(
                "/schema",
                route_handlers=[],
                include_in_schema=False,
                opt=requires("public"),
                response_headers=[
                    ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
                    ResponseHeader(name="Referrer-Policy", value="no-referrer"),
                ],
            ),
            components=Components(security_schemes={SECURITY_SCHEME: _BEARER}),
        ),
        debug=False,
        logging_config=None,  # configure_logging owns the service's log lines
    )
    _document_access(app, access)
    # Outermost, around routing too: 404s and 405s also get a request id and are counted.
    # Inside it, infer requests skip Litestar's routing and DI (see service/http/infer_fast_path.py).
    middleware = RequestMiddleware(
        InferFastPath(app.asgi_handler, app.state, access),
        metrics,
        settings.max_in_flight_requests,
        settings.access_log,
        settings.idle_poll_ms / 1000,
    )
    app.asgi_handler = middleware
    app.request_middleware = middleware
    return app


_API_DESCRIPTION = (
    "The Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data, model configuration, "
    "statistics and model repository extensions, and weightserve's own: the weights of every model (per-layer "
    "statistics, spectra, diffs, raw values), and what happens inside the network at inference time (activations, "
    "heat maps, evaluation). Inference bodies are shown in their JSON form; every route that takes one also takes "
    "Triton's binary form (a JSON header whose length is in `Inference-Header-Content-Length`, then raw tensor "
    'bytes), compressed with gzip or deflate if `Content-Encoding` says so. Every error is `{"error": "..."}` '
    "with its status."
)

_TAGS = [
    Tag(name="server", description="Health and server metadata (V2)."),
    Tag(name="models", description="Model metadata, readiness, inference (V2), Triton's config and statistics."),
    Tag(name="repository", description="Triton's model repository extension: index, load, unload."),
    Tag(name="weights", description="The weights extension: layers, tensors, spectra, diffs, raw values."),
    Tag(name="inside the network", description="Activations, heat maps and evaluation on V2 inference bodies."),
    Tag(name="operations", description="Prometheus metrics."),
]


_BEARER = SecurityScheme(
    type="http",
    scheme="bearer",
    description=(
        "A token from WEIGHTSERVE_AUTH_TOKENS, WEIGHTSERVE_AUTH_TOKENS_FILE or WEIGHTSERVE_ADMIN_TOKEN. Each operation "
        "lists the scope it needs (infer, inspect, export, admin); an operation that also lists {} is open on this "
        "server. 401: no or an unknown token; 403: the token lacks the scope, or no configured token grants it."
    ),
)


def _document_access(app: Litestar, access: AccessPolicy) -> None:
    """Each operation's OpenAPI security, from the scope its route declares and this server's open scopes.

    The handlers are this app's own copies (Litestar registers copies, never the declared objects), and
    the schema is built on its first request, after this.
    """
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            declared = declared_access(handler)
            if isinstance(handler, HTTPRouteHandler) and declared is not None:
                handler.security = access.security(declared)
