"""Pure token policy: scope, origin, JWT expiry, renewal time, backoff, token hygiene."""

from __future__ import annotations

import base64
import json

import pytest
from authkit import make_jwt
from hypothesis import given
from hypothesis import strategies as st

from bulkflex.auth import HostScope, RefreshPolicy, clean_token, jwt_expiry, renew_at, same_origin


def test_scope_covers_listed_hosts_on_any_port_and_only_http() -> None:
    scope = HostScope.of(["Data.Example.org", "https://other.example/x?y=1", "127.0.0.1:8443"])
    assert scope.covers("https://data.example.org/a.tif")
    assert scope.covers("http://DATA.example.org:8080/a.tif")
    assert scope.covers("https://other.example/b")
    assert scope.covers("https://127.0.0.1:8443/x")
    assert not scope.covers("https://127.0.0.1:8444/x")  # an entry with a port pins the port
    assert not scope.covers("https://evil.example.org.attacker.net/")
    assert not scope.covers("ftp://data.example.org/a.tif")
    assert not scope.covers("not a url")
    assert not scope.covers("https://[::1/")


def test_scope_with_ipv6_literals() -> None:
    scope = HostScope.of(["[::1]", "[fe80::2]:8080"])
    assert scope.covers("http://[::1]:9000/x")
    assert scope.covers("http://[fe80::2]:8080/x")
    assert not scope.covers("http://[fe80::2]:8081/x")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b?x=1", True),
        ("https://h.example/a", "https://h.example:443/b", True),
        ("http://h.example/a", "http://h.example:80/b", True),
        ("http://127.0.0.1:8000/a", "http://127.0.0.2:8000/a", False),
        ("http://h.example/a", "https://h.example/a", False),
        ("http://h.example:8000/a", "http://h.example:8001/a", False),
        ("http://H.Example/a", "http://h.example/a", True),
        ("http:///nohost", "http:///nohost", False),
    ],
)
def test_same_origin(a: str, b: str, same: bool) -> None:
    assert same_origin(a, b) is same
    assert same_origin(b, a) is same


def test_jwt_expiry_reads_exp_and_ignores_everything_else() -> None:
    assert jwt_expiry(make_jwt(exp=1_900_000_000)) == 1_900_000_000.0
    assert jwt_expiry(make_jwt(exp=12.5)) == 12.5
    assert jwt_expiry("opaque-token") is None
    assert jwt_expiry("a.b.c") is None
    assert jwt_expiry("a..c") is None
    payload = base64.urlsafe_b64encode(json.dumps([1, 2]).encode()).decode().rstrip("=")
    assert jwt_expiry(f"e30.{payload}.") is None  # payload not an object
    for exp in ("1900000000", True, None, float("nan")):
        payload = base64.urlsafe_b64encode(
            json.dumps({"exp": exp}, allow_nan=True).encode()
        ).decode()
        assert jwt_expiry(f"e30.{payload.rstrip('=')}.sig") is None


def test_renew_at_uses_margin_or_a_tenth_of_the_life() -> None:
    assert renew_at(0, 36_000, 60) == 36_000 - 60  # a 10-hour token: 60 s before
    assert renew_at(100, 130, 60) == 127  # a 30-second token: 3 s before
    assert renew_at(100, 90, 60) == 100  # already expired when fetched: due now


@given(
    fetched=st.floats(0, 1e10),
    life=st.floats(-1e6, 1e6),
    margin=st.floats(0, 1e5),
)
def test_renewal_never_before_fetch_and_never_after_expiry(
    fetched: float, life: float, margin: float
) -> None:
    when = renew_at(fetched, fetched + life, margin)
    assert when >= fetched - 1e-6 * max(1.0, abs(fetched))
    if life > 0:
        assert when <= fetched + life


def test_backoff_doubles_and_is_capped() -> None:
    policy = RefreshPolicy(attempts=5, first_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay_after(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RefreshPolicy(first_delay_s=1.0, max_delay_s=30).delay_after(10_000) == 30.0
    with pytest.raises(ValueError):
        policy.delay_after(0)
    with pytest.raises(ValueError):
        RefreshPolicy(attempts=0)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("abc.def-ghi_~+/=\n", "abc.def-ghi_~+/="),
        ("  Bearer eyJx.y.z  ", "eyJx.y.z"),
        ("bearer\ttok", "tok"),
    ],
)
def test_clean_token_accepts(raw: str, clean: str) -> None:
    assert clean_token(raw) == clean


@pytest.mark.parametrize("raw", ["", "  \n", "Bearer ", "two\ntokens", "a b", "tök", "a\x00b"])
def test_clean_token_refuses_without_quoting_the_text(raw: str) -> None:
    with pytest.raises(ValueError) as info:
        clean_token(raw)
    text = raw.strip()
    if len(text) > 2:
        assert text not in str(info.value)
