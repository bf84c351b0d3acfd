"""docs/reliability.md's generator: records in, a table with totals out; bad records are errors naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..faults.records import FaultRecord, append_record, read_records
from ..faults.reliability_report import cell, main, render


def test_records_round_trip_and_render_with_totals(tmp_path: Path) -> None:
    append_record(tmp_path, FaultRecord("bad input: a", "bad input", survived=0, detail="xfail (needs branch inputs)"))
    append_record(tmp_path, FaultRecord("kill -9 | train", "crash", tried=5, survived=4, lost="a step", detail="x",
                                        made_by="SIGKILL of train", verified="same weights"))
    records = read_records(tmp_path)
    assert [r.fault for r in records] == ["bad input: a", "kill -9 | train"]
    page = render(records, "2026-12-01 12:00 UTC", "abc1234")
    assert "Generated 2026-12-01 12:00 UTC at commit `abc1234`" in page
    assert "**Total: 4 of 6 faults survived** (2 not), in 2 records." in page
    assert "| crash | 1 | 5 | 4 |" in page and "| bad input | 1 | 1 | 0 |" in page
    # a pipe cannot split a row; how the fault was made and what was checked after it sit beside the outcome
    assert "| kill -9 \\| train | crash | SIGKILL of train | 5 | 4 | same weights | a step | x |" in page
    assert "| bad input: a | bad input | not recorded | 1 | 0 | not recorded |" in page
    assert page.index("| kill -9") < page.index("| bad input: a")  # by kind: the long table of inputs last
    assert cell("\x1b[1mbold\x1b[0m\n  text") == "bold text"  # one line, no terminal colours


def test_a_record_must_say_how_it_came_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="survived=None"):
        append_record(tmp_path, FaultRecord("undecided", "crash"))
    with pytest.raises(ValueError, match="survived=3 must lie in 0..1"):
        append_record(tmp_path, FaultRecord("too many", "crash", survived=3))
    (tmp_path / "broken.jsonl").write_text('{"fault": "x"}\n')
    with pytest.raises(ValueError, match="broken.jsonl:1: not a fault record"):
        read_records(tmp_path)


def test_the_command_writes_the_page_or_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reliability.md"
    assert main(["--records", str(tmp_path / "none"), "--out", str(out)]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["--records", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "error: no fault records" in capsys.readouterr().err and not out.exists()
    append_record(tmp_path / "records", FaultRecord("f", "crash", survived=1))
    assert main(["--records", str(tmp_path / "records"), "--out", str(out)]) == 0
    assert "**Total: 1 of 1 faults survived**" in out.read_text()
