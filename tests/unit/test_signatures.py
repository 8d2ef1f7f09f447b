"""Signature verification, against the vector computed from Nylas's documented algorithm (shared/nylas.md §2.1)."""

from __future__ import annotations

from service.signatures import is_valid, sign

VECTOR_SECRET = "test_webhook_secret"
VECTOR_BODY = (
    b'{"specversion":"1.0","type":"message.created","source":"/google/emails/realtime","id":"evt_1",'
    b'"time":1723821985,"webhook_delivery_attempt":1,"data":{"application_id":"app_1","object":'
    b'{"id":"msg_1","grant_id":"grant_1","object":"message"}}}'
)
VECTOR_SIGNATURE = "53361b0a335b5c1246cbd6bf6c1f113f26e7e0f8fb57f7874d2385de4c20cf7c"


def test_sign_matches_the_known_vector() -> None:
    assert len(VECTOR_BODY) == 239
    assert sign(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE


def test_valid_under_any_configured_secret() -> None:
    assert is_valid(VECTOR_BODY, VECTOR_SIGNATURE, ["new-secret", VECTOR_SECRET])


def test_invalid_without_the_right_secret() -> None:
    assert not is_valid(VECTOR_BODY, VECTOR_SIGNATURE, ["new-secret"])
    assert not is_valid(VECTOR_BODY, VECTOR_SIGNATURE, [])


def test_missing_or_empty_header_is_invalid() -> None:
    assert not is_valid(VECTOR_BODY, None, [VECTOR_SECRET])
    assert not is_valid(VECTOR_BODY, "", [VECTOR_SECRET])


def test_one_changed_byte_is_invalid() -> None:
    assert not is_valid(VECTOR_BODY.replace(b"msg_1", b"msg_2"), VECTOR_SIGNATURE, [VECTOR_SECRET])


def test_non_ascii_header_is_invalid_not_an_error() -> None:
    """hmac.compare_digest raises on non-ASCII str; a hostile header must not become a 500."""
    assert not is_valid(VECTOR_BODY, "é" * 64, [VECTOR_SECRET])


def test_upper_case_prefixed_and_padded_headers_are_accepted() -> None:
    assert is_valid(VECTOR_BODY, f"  sha256={VECTOR_SIGNATURE.upper()} ", [VECTOR_SECRET])
