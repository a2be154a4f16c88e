"""The benchmark's remote mode, in its report: the remote/ours ratio and the wire figures per search.
(The remote engine itself runs for real in test_remote_engine.py, test_fleet.py and the suites.)"""

from __future__ import annotations

import pytest

from bench.benchmark import wire_per_search
from bench.report import markdown_table, ratios
from models.engine import EngineStats


def test_remote_is_compared_with_ours_pooled_and_round_by_round():
    modes = {
        "ours": {"requests_per_second": 2.0, "rounds_requests_per_second": [1.8, 2.2]},
        "remote": {"requests_per_second": 1.8, "rounds_requests_per_second": [1.7, 1.9]},
    }
    pooled, by_round = ratios(modes)
    assert pooled == {"remote_vs_ours": pytest.approx(0.9)}
    assert by_round["remote_vs_ours"] == pytest.approx([1.7 / 1.8, 1.9 / 2.2])


def test_wire_figures_per_search_and_what_the_image_would_have_cost():
    before = EngineStats(wire_requests=10, wire_bytes=5_000, wire_image_uploads=1, wire_image_bytes=1_000)
    after = EngineStats(wire_requests=42, wire_bytes=45_000, wire_image_uploads=3, wire_image_bytes=21_000)
    wire = wire_per_search(before, after, searches=2)
    # 16 requests and 20,000 bytes per search, one 10,000-byte image upload each: the other 15
    # requests would have carried it too.
    assert wire == {
        "requests": 16,
        "bytes": 20_000,
        "image_uploads": 1,
        "image_bytes_per_upload": 10_000,
        "bytes_if_every_request_carried_the_image": 20_000 + 15 * 10_000,
    }
    table = markdown_table({"modes": {}, "ratios": {}, "remote_wire_per_search": wire})
    assert "16.0 engine requests, 19.5 KiB sent, 1.00 image uploads of 9.8 KiB" in table
