"""The application factory: ``create_app(settings)``; the lifespan owns every session and batcher."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from service.http.auth import SECURITY_SCHEME, AccessPolicy, AuditTrail, declared_access, requires
from service.http.error_responses import EXCEPTION_HANDLERS
from service.http.infer_fast_path import InferFastPath
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
from service.ops.shutdown import on_stop_signal
from service.serving.registry import ModelRegistry
from service.settings import Settings
from service.weights.store import WeightStore

log = logging.getLogger(__name__)

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


def provide_registry(state: State) -> ModelRegistry:
    registry: ModelRegistry = state.registry
    return registry


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


async def _poll_forever(registry: ModelRegistry, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await registry.poll()
        except Exception:  # a bad scan must not stop polling
            log.exception("repository poll failed")


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    registry = ModelRegistry(settings, metrics=app.state.metrics)
    app.state.registry = registry
    app.state.weights = WeightStore(settings.weights)
    app.state.inspector = Inspector(settings.inspection)
    await registry.start()
    # Everything built so far lives as long as the process: keep the collector from rescanning it,
    # since a full collection over the frameworks' objects stalls every request for tens of ms.
    gc.collect()
    gc.freeze()
    poller = None
    if settings.poll_interval_s > 0:
        poller = asyncio.get_running_loop().create_task(_poll_forever(registry, settings.poll_interval_s))
    try:
        with on_stop_signal(registry.begin_shutdown):
            yield
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await registry.drain(settings.drain_timeout_s)
        await registry.aclose()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics = ServiceMetrics()
    access = AccessPolicy.from_settings(settings, metrics)
    app = Litestar(
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
        state=State({"settings": settings, "extensions": list(EXTENSIONS), "metrics": metrics}),
        guards=[access.guard],
        middleware=[DefineMiddleware(AuditTrail, policy=access)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="weightserve",
            version="0.1.0",
            render_plugins=[SwaggerRenderPlugin()],
            # The API's description is no secret, and Swagger UI fetches it without credentials.
            openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, opt=requires("public")),
            components=Components(security_schemes={SECURITY_SCHEME: _BEARER}),
        ),
        debug=False,
        logging_config=None,  # configure_logging owns the service's log lines
    )
    _document_access(app, access)
    # Outermost, around routing too: 404s and 405s also get a request id and are counted.
    # Inside it, infer requests skip Litestar's routing and DI (see service/http/infer_fast_path.py).
    app.asgi_handler = RequestMiddleware(
        InferFastPath(app.asgi_handler, app.state, access),
        metrics,
        settings.max_in_flight_requests,
        settings.access_log,
    )
    return app


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
