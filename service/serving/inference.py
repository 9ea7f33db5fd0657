"""One inference request end to end: decode, run (batched or alone), encode, account."""

from __future__ import annotations

import time
from collections.abc import Mapping

from service.errors import ServiceError
from service.protocol.decode import decode_inputs
from service.protocol.encode import EncodedResponse, encode_response, select_outputs
from service.protocol.request import parse_request
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
    async with registry.lease(name, version) as loaded:
        try:
            request = parse_request(body, headers, settings.max_request_bytes)
            feeds = decode_inputs(request, loaded.model.inputs, name, settings.max_request_bytes)
            selected = select_outputs(request, loaded.model.output_names, name)
            rows = request_rows(loaded.model.inputs, feeds)
            decoded = time.perf_counter_ns()
            outcome = await loaded.infer(feeds, rows)
            ran = time.perf_counter_ns()
            response = encode_response(
                model_name=name,
                model_version=str(loaded.version),
                request_id=request.id,
                outputs=[(out, outcome.outputs[out], binary) for out, binary in selected],
                accept_encoding=headers.get("accept-encoding"),
            )
        except ServiceError:
            loaded.stats.record_failure(time.perf_counter_ns() - began)
            raise
        done = time.perf_counter_ns()
        loaded.stats.record_success(
            rows=rows,
            total_ns=done - began,
            queue_ns=outcome.queue_ns,
            input_ns=decoded - began,
            infer_ns=outcome.compute_ns,
            output_ns=done - ran,
        )
    return response

