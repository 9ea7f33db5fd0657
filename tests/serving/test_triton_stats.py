"""Triton statistics of one version summed over the files of every worker process."""

from __future__ import annotations

from pathlib import Path

from service.serving.triton_stats import StatsBook


def test_every_figure_is_the_sum_over_the_workers(tmp_path: Path) -> None:
    workers = [StatsBook(tmp_path, writer) for writer in ("101", "102", "103")]
    for index, book in enumerate(workers):
        stats = book.for_version("m", 2)
        assert book.for_version("m", 2) is stats  # one set of counters per version and process
        for _ in range(index + 1):
            stats.record_success(rows=4, total_ns=100, queue_ns=10, input_ns=20, infer_ns=30, output_ns=40)
            stats.record_execution(4, 30)
        stats.record_execution(0, 5)  # an empty batch is a batch size of its own
        stats.record_failure(7)
    workers[0].for_version("m", 1).record_success(rows=1, total_ns=1, queue_ns=1, input_ns=1, infer_ns=1, output_ns=1)
    workers[2].close()  # an exited worker's counts stay in the sums

    answer = workers[1].as_json("m", 2)
    assert answer == workers[0].as_json("m", 2)
    assert answer["name"] == "m"
    assert answer["version"] == "2"
    assert answer["inference_count"] == 4 * 6
    assert answer["execution_count"] == 6 + 3
    assert answer["last_inference"] > 0
    inference = answer["inference_stats"]
    assert inference["success"] == {"count": 6, "ns": 600}
    assert inference["fail"] == {"count": 3, "ns": 21}
    assert inference["queue"] == {"count": 6, "ns": 60}
    assert inference["compute_input"] == {"count": 6, "ns": 120}
    assert inference["compute_infer"] == {"count": 6, "ns": 180}
    assert inference["compute_output"] == {"count": 6, "ns": 240}
    assert inference["cache_hit"] == inference["cache_miss"] == {"count": 0, "ns": 0}
    zero = {"count": 0, "ns": 0}
    assert answer["batch_stats"] == [
        {"batch_size": 0, "compute_input": zero, "compute_infer": {"count": 3, "ns": 15}, "compute_output": zero},
        {"batch_size": 4, "compute_input": zero, "compute_infer": {"count": 6, "ns": 180}, "compute_output": zero},
    ]
    assert workers[1].as_json("m", 1)["inference_count"] == 1
    assert workers[1].as_json("m", 9)["inference_count"] == 0
    for book in workers[:2]:
        book.close()
