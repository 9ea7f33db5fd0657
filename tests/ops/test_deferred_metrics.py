"""Hot-path metric updates added up and applied together: the figures a scrape shows are exactly those
of one update per event."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.ops.prometheus import Deferred, ServiceMetrics, observe_all

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("latency_seconds", "help", ["route"], buckets=BUCKETS, registry=registry)


def test_observing_many_values_at_once_gives_what_observing_each_gives() -> None:
    values = [0.0005, 0.001, 0.0011, 0.01, 0.5, 1.0, 7.0, 0.0, 0.05, 0.05]
    one_by_one, together = CollectorRegistry(), CollectorRegistry()
    each = histogram(one_by_one).labels("r")
    for value in values:
        each.observe(value)
    observe_all(histogram(together).labels("r"), values)
    assert samples(together) == samples(one_by_one)
    assert samples(together)['latency_seconds_bucket{le="0.001",route="r"}'] == 3.0  # a bound counts in its bucket


def samples(registry: CollectorRegistry) -> dict[str, float]:
    lines = generate_latest(registry).decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if not line.startswith("#") and "_created" not in line
    }


async def test_updates_on_the_event_loop_wait_and_a_scrape_applies_them_first() -> None:
    metrics = ServiceMetrics()
    counter = metrics.http_requests.labels("POST", "/v2/models/{model_name}/infer", "200")
    for _ in range(3):
        metrics.deferred.inc(counter)
    metrics.deferred.inc(metrics.in_flight)
    metrics.deferred.inc(metrics.in_flight, -1.0)
    metrics.deferred.observe(metrics.batch_size.labels("m", "1"), 4)
    metrics.deferred.observe_many(metrics.queue_time.labels("m", "1"), [0.0001, 0.002])
    metrics.deferred.observe_many(metrics.queue_time.labels("m", "1"), [0.3])
    inference = (metrics.inference_requests.labels("m", "1", "200"), metrics.inference_latency.labels("m", "1"))
    metrics.deferred.count(inference, 0.002)
    metrics.deferred.count(inference, 0.2)
    text = metrics.exposition().decode()
    assert 'weightserve_inference_requests_total{model="m",status="200",version="1"} 2.0' in text
    assert 'weightserve_inference_request_duration_seconds_bucket{le="0.0025",model="m",version="1"} 1.0' in text
    assert 'weightserve_inference_request_duration_seconds_sum{model="m",version="1"} 0.202' in text
    assert (
        'weightserve_http_requests_total{method="POST",route="/v2/models/{model_name}/infer",status="200"} 3.0' in text
    )
    assert "weightserve_http_requests_in_flight 0.0" in text
    assert 'weightserve_batch_size_bucket{le="4.0",model="m",version="1"} 1.0' in text
    assert 'weightserve_batch_size_count{model="m",version="1"} 1.0' in text
    queue = "weightserve_queue_duration_seconds"
    assert f'{queue}_count{{model="m",version="1"}} 3.0' in text
    assert f'{queue}_bucket{{le="0.0025",model="m",version="1"}} 2.0' in text


async def test_pending_updates_are_applied_by_the_loop_without_a_scrape() -> None:
    registry = CollectorRegistry()
    counter = Counter("events", "help", registry=registry)
    deferred = Deferred()
    deferred.inc(counter, 2.0)
    assert registry.get_sample_value("events_total") == 0.0  # held back
    for _ in range(200):  # the loop applies them a few milliseconds later
        await asyncio.sleep(0.01)
        if registry.get_sample_value("events_total") == 2.0:
            break
    assert registry.get_sample_value("events_total") == 2.0


def test_updates_off_an_event_loop_apply_at_once() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("level", "help", registry=registry)
    deferred = Deferred()
    deferred.inc(gauge, 5.0)
    assert registry.get_sample_value("level") == 5.0
    seen: list[float | None] = []

    def elsewhere() -> None:
        deferred.inc(gauge, -2.0)
        seen.append(registry.get_sample_value("level"))

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert seen == [3.0]


def test_a_loop_that_ended_with_updates_pending_loses_none() -> None:
    registry = CollectorRegistry()
    counter = Counter("events", "help", registry=registry)
    deferred = Deferred()

    async def count(times: int) -> None:
        for _ in range(times):
            deferred.inc(counter)

    asyncio.run(count(3))  # this loop closes before its timer fires
    asyncio.run(count(1))  # the next loop on the thread applies what the first one left
    deferred.flush()
    assert registry.get_sample_value("events_total") == 4.0


async def test_a_sampled_level_is_read_when_updates_apply_and_on_a_scrape() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("in_flight", "help", registry=registry)
    deferred = Deferred()
    level = [0]
    deferred.sample(gauge, lambda: float(level[0]))
    level[0] = 3
    deferred.touch()  # a request began: the level is applied a few milliseconds later, without a scrape
    for _ in range(200):
        await asyncio.sleep(0.01)
        if registry.get_sample_value("in_flight") == 3.0:
            break
    assert registry.get_sample_value("in_flight") == 3.0
    level[0] = 1
    deferred.flush()  # what a scrape does first
    assert registry.get_sample_value("in_flight") == 1.0
