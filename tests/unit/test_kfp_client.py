"""Where `genbench kfp submit` finds its KFP token, and which backend versions it accepts (flows/kfp_client.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbench.flows.kfp_client import backend_version, check_backend, find_token


@pytest.fixture()
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No KFP_TOKEN and a service-account token path with nothing there; returns that path."""
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "sa-token"))
    return tmp_path / "sa-token"


def test_find_token_prefers_the_file_then_the_variable_then_the_service_account(
        no_token: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.write_text("from-file\n")
    no_token.write_text("from-service-account\n")
    monkeypatch.setenv("KFP_TOKEN", "from-variable")
    assert find_token(given) == "from-file"
    assert find_token(None) == "from-variable"
    monkeypatch.delenv("KFP_TOKEN")
    assert find_token(None) == "from-service-account"


def test_find_token_names_the_three_ways_when_there_is_none(no_token: Path) -> None:
    with pytest.raises(ValueError, match="no KFP token") as error:
        find_token(None)
    assert all(way in str(error.value) for way in ("--token-file", "KFP_TOKEN", str(no_token)))
    assert "\n" not in str(error.value)


def test_find_token_refuses_a_missing_or_empty_file(no_token: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        find_token(tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty KFP token"):
        find_token(tmp_path / "empty")


@pytest.mark.parametrize(("tag", "version"), [("2.15.0", (2, 15, 0)), ("v2.16.1-rc.1", (2, 16, 1)),
                                              ("unknown", None), ("", None)])
def test_backend_version_reads_the_healthz_tag(tag: str, version: tuple[int, int, int] | None) -> None:
    assert backend_version(tag) == version


def test_check_backend_refuses_an_older_release_only() -> None:
    for tag in ("2.15.0", "2.17.3", "3.0.0", "unknown"):
        check_backend("http://kfp", tag)
    for tag in ("2.14.3", "2.5.0", "1.8.5"):
        with pytest.raises(ValueError, match=rf"is {tag}; this pipeline needs KFP 2\.15\.0 or newer"):
            check_backend("http://kfp", tag)
