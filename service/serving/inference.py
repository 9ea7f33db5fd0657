"""One inference request end to end: decode, run (batched or alone), encode, account."""

from __future__ import annotations

import time
from collections.abc import Mapping

from service.errors import ServiceError
from service.protocol.decode import decode_inputs
from service.protocol.encode import EncodedResponse, select_outputs
from service.protocol.request import check_request, read_header
from service.protocol.signature import request_rows
from service.serving.registry import ModelRegistry
from service.settings import Settings


async def infer(
    registry: ModelRegistry,
    settings: Settings,
    name: str,
    version: int | None,
    body: bytes,
    headers: Mapping[str, str],
) -> EncodedResponse:
    began = time.perf_counter_ns()
    loaded = registry.hold(name, version)
    try:
        limit = settings.max_request_bytes
        plan = loaded.request_plan
        planned = plan.read_body(body, headers, limit)
        if planned is None:
            header = read_header(body, headers, limit)
            planned = plan.read(header, limit)
        if planned is not None:
            request_id, feeds, rows, selected = planned.request_id, planned.feeds, planned.rows, planned.selected
        else:  # anything out of the ordinary, errors included
            request = check_request(header)
            request_id = request.id
            feeds = decode_inputs(request, loaded.model.inputs, name, limit)
            selected = select_outputs(request, loaded.model.output_names, name)
            rows = request_rows(loaded.model.inputs, feeds)
        decoded = time.perf_counter_ns()
        outcome = await loaded.infer(feeds, rows)
        ran = time.perf_counter_ns()
        response = loaded.response_encoder.encode(request_id, selected, outcome.outputs, headers.get("accept-encoding"))
    except ServiceError:
        loaded.stats.record_failure(time.perf_counter_ns() - began)
        raise
    else:
        done = time.perf_counter_ns()
        loaded.stats.record_success(
            rows, done - began, outcome.queue_ns, decoded - began, outcome.compute_ns, done - ran
        )  # positional: keyword arguments cost every request a little more
    finally:
        loaded.release()  # so that an unload or swap waiting for this request goes on
    return response

