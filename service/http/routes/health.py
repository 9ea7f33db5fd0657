"""Server health and metadata: GET /v2/health/live, /v2/health/ready, /v2."""

from importlib.metadata import PackageNotFoundError, version

from litestar import Controller, Response, get
from litestar.datastructures import State

from service.http.auth import requires
from service.http.routes.schemas import SCOPED, Live, Ready, ServerMetadata, answer, answers
from service.ops.supervisor import PoolStatus
from service.serving.registry import ModelRegistry


def _server_version() -> str:
    try:
        return version("weightserve")
    except PackageNotFoundError:
        return "0+unknown"


class HealthController(Controller):
    path = "/v2"
    tags = ["server"]  # noqa: RUF012

    # Probes carry no token (kubelet, load balancers): they tell only whether the server is up.
    @get("/health/live", sync_to_thread=False, opt=requires("public"), summary="Server live", responses=answers(Live))
    def live(self) -> Response[dict[str, bool]]:
        return Response({"live": True})

    @get(
        "/health/ready",
        sync_to_thread=False,
        opt=requires("public"),
        summary="Server ready",
        responses=answers(Ready) | answer(400, Ready, "Not ready: starting or draining."),
    )
    def ready(self, registry: ModelRegistry, state: State) -> Response[dict[str, object]]:
        # V2: the status code is the answer; 4xx means "not ready". The worker pool rides along: a
        # worker dying in a loop shows here (and in /metrics) while the others keep serving.
        workers: PoolStatus = state.workers
        body = {"ready": registry.ready, "workers": workers.as_json()}
        return Response(body, status_code=200 if registry.ready else 400)

    @get(
        "/",
        sync_to_thread=False,
        opt=requires("infer"),
        summary="Server metadata",
        responses=answers(ServerMetadata, *SCOPED, 503),
    )
    def server_metadata(self, state: State) -> dict[str, object]:
        return {"name": "weightserve", "version": _server_version(), "extensions": list(state.extensions)}
