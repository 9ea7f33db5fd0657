"""Operations: ``GET /metrics`` in the Prometheus text format."""

from litestar import Controller, Response, get
from litestar.datastructures import State

from service.http.auth import requires
from service.http.routes.schemas import SCOPED, answers
from service.ops.prometheus import CONTENT_TYPE, MEDIA_TYPE, ServiceMetrics


class MetricsController(Controller):
    path = "/metrics"
    # A scrape shows model names, versions and request counts: what the infer scope's statistics show.
    opt = requires("infer")
    tags = ["operations"]  # noqa: RUF012

    @get(
        "/",
        sync_to_thread=False,
        media_type=MEDIA_TYPE,
        summary="Prometheus metrics",
        responses=answers(str, *SCOPED, description="Prometheus text format.", media_type=CONTENT_TYPE),
    )
    def scrape(self, state: State) -> Response[bytes]:
        metrics: ServiceMetrics = state.metrics
        return Response(metrics.exposition(), media_type=MEDIA_TYPE)
