"""check_response: every way a server can answer a (range) request, judged before any write."""

from __future__ import annotations

from multidict import CIMultiDict

from bulkflex.core.responses import RangeRequest, Validator, Verdict, check_response

NOW = 1_700_000_000.0
V1 = Validator(etag='"v1"')


def judge(request: RangeRequest, status: int, **headers: str):  # type: ignore[no-untyped-def]
    cooked = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return check_response(request, status, cooked, now=NOW)


def resume(start: int, total: int | None = 100) -> RangeRequest:
    return RangeRequest(start=start, ranged=True, validator=V1, known_total=total)


def test_plain_200_is_accepted_with_its_length_and_validator() -> None:
    d = judge(RangeRequest(), 200, Content_Length="100", ETag='"v1"')
    assert d.verdict is Verdict.ACCEPT
    assert (d.start, d.length, d.total, d.validator) == (0, 100, 100, V1)


def test_chunked_200_has_unknown_length() -> None:
    d = judge(RangeRequest(), 200)
    assert d.verdict is Verdict.ACCEPT and d.length is None and d.total is None


def test_exact_206_is_accepted() -> None:
    d = judge(resume(40), 206, Content_Range="bytes 40-99/100", Content_Length="60", ETag='"v1"')
    assert d.verdict is Verdict.ACCEPT
    assert (d.start, d.length, d.total) == (40, 60, 100)


def test_206_starting_elsewhere_is_never_written() -> None:
    d = judge(resume(40), 206, Content_Range="bytes 0-99/100", Content_Length="100")
    assert d.verdict is Verdict.RANGE_BROKEN
    assert "asked from byte 40" in d.reason


def test_206_ending_early_is_refused() -> None:
    d = judge(resume(40), 206, Content_Range="bytes 40-89/100", Content_Length="50")
    assert d.verdict is Verdict.RANGE_BROKEN


def test_206_with_length_disagreeing_with_content_range_is_refused() -> None:
    d = judge(resume(40), 206, Content_Range="bytes 40-99/100", Content_Length="61")
    assert d.verdict is Verdict.RANGE_BROKEN


def test_206_without_content_range_is_refused() -> None:
    assert judge(resume(40), 206, Content_Length="60").verdict is Verdict.RANGE_BROKEN


def test_206_with_a_new_total_is_refused() -> None:
    d = judge(resume(40), 206, Content_Range="bytes 40-119/120", Content_Length="80")
    assert d.verdict is Verdict.RANGE_BROKEN and "size changed" in d.reason


def test_206_for_another_version_is_refused() -> None:
    d = judge(resume(40), 206, Content_Range="bytes 40-99/100", ETag='"v2"')
    assert d.verdict is Verdict.RANGE_BROKEN


def test_200_to_conditional_range_with_new_etag_means_changed() -> None:
    d = judge(resume(40), 200, Content_Length="100", ETag='"v2"')
    assert d.verdict is Verdict.WHOLE_FILE and d.changed and d.start == 0


def test_200_to_range_with_same_etag_means_range_ignored() -> None:
    d = judge(resume(40), 200, Content_Length="100", ETag='"v1"')
    assert d.verdict is Verdict.WHOLE_FILE and not d.changed


def test_weak_etag_is_not_a_validator() -> None:
    assert Validator.from_headers(CIMultiDict({"ETag": 'W/"x"'})).etag is None


def test_416_is_not_success_and_reports_total() -> None:
    d = judge(resume(100), 416, Content_Range="bytes */100")
    assert d.verdict is Verdict.NOT_SATISFIABLE and d.total == 100


def test_gzip_body_is_refused() -> None:
    d = judge(RangeRequest(), 200, Content_Encoding="gzip", Content_Length="10")
    assert d.verdict is Verdict.FAIL and "gzip" in d.reason


def test_retryable_statuses_carry_retry_after() -> None:
    for status in (408, 429, 500, 502, 503, 504):
        d = judge(RangeRequest(), status, Retry_After="7")
        assert d.verdict is Verdict.RETRY and d.retry_after_s == 7.0


def test_retry_after_http_date() -> None:
    d = judge(RangeRequest(), 503, Retry_After="Tue, 14 Nov 2023 22:13:40 GMT")
    assert d.verdict is Verdict.RETRY and d.retry_after_s == 20.0


def test_not_found_and_auth() -> None:
    assert judge(RangeRequest(), 404).verdict is Verdict.FAIL
    assert judge(RangeRequest(), 410).verdict is Verdict.FAIL
    assert judge(RangeRequest(), 401).verdict is Verdict.AUTH
