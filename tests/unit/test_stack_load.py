"""The load benchmark's arithmetic (genbench/stack/load.py): nearest-rank percentiles, where a series of levels
degrades, the `--clients` flag; the run against a real stack is in tests/services/test_stack.py."""

from __future__ import annotations

import math

import pytest

from genbench.stack.load import GAIN, OPERATIONS, Level, degrades_at, parse_levels, percentile, table


def _level(clients: int, requests: int, errors: int = 0, seconds: float = 10.0) -> Level:
    per_op = dict.fromkeys(OPERATIONS, 0) | {"log": requests - errors, "read": errors}  # the failed ones: reads
    return Level(clients, seconds, per_op, dict.fromkeys(OPERATIONS, 0) | {"read": errors},
                 dict.fromkeys(OPERATIONS, 5.0), dict.fromkeys(OPERATIONS, 9.0), "HTTPError: 503" if errors else "")


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0, 3.0], 50) == 3.0 and percentile([7.0, 3.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_a_level_degrades_when_throughput_stops_growing_or_a_request_fails() -> None:
    scaling = [_level(1, 100), _level(2, 190), _level(4, 300)]
    assert degrades_at(scaling) is None
    flat = [_level(1, 100), _level(2, 190), _level(4, int(190 * GAIN) - 1)]
    assert degrades_at(flat) == 4
    assert degrades_at([_level(1, 100), _level(2, 400, errors=1), _level(4, 900)]) == 2
    assert degrades_at([_level(1, 100, errors=3)]) == 1
    assert flat[1].per_second == 19.0 and flat[1].total == 190


def test_the_table_has_a_row_per_level_with_the_first_error() -> None:
    text = table([_level(1, 100), _level(2, 150, errors=2)])
    rows = text.splitlines()
    assert len(rows) == 4 and rows[0].startswith("| clients | requests/s |")
    assert rows[2].startswith("| 1 | 10.0 |") and rows[3].endswith("| 2 of 150 (HTTPError: 503) |")


@pytest.mark.parametrize("text", ["", "0,1", "4,2", "1,1", "1,x"])
def test_clients_must_be_rising_positive_counts(text: str) -> None:
    with pytest.raises(ValueError, match="--clients"):
        parse_levels(text)


def test_clients_parse() -> None:
    assert parse_levels("1,2, 4,16") == [1, 2, 4, 16]
