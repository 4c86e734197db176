from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinpipe.envelope import Envelope, EnvelopeError, decode, encode

VALID = {
    "v": 1,
    "device": "nucleo-1",
    "boot": "b1",
    "seq": 7,
    "time_ns": 1_700_000_000_000_000_000,
    "values": {"temperature": 24.5, "humidity": 60},
    "trace": {"publish": 1_700_000_000_000_000_100},
}


def with_(**changes: object) -> bytes:
    return json.dumps({**VALID, **changes}).encode()


def test_round_trip() -> None:
    envelope = Envelope("dev-1", "boot", 3, 123, {"t": 1.5}, {"publish": 456})
    assert decode(encode(envelope)) == envelope


def test_integers_become_floats_so_influx_field_types_never_flip() -> None:
    assert decode(with_()).values == {"temperature": 24.5, "humidity": 60.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "expected a JSON object"),
        (with_(v=2), "unsupported envelope version 2"),
        (with_(extra=1), "unknown keys ['extra']"),
        (with_(device="a/b"), "device must match"),
        (with_(device=""), "device must match"),
        (with_(boot="a\nb"), "boot must match"),
        (with_(boot=""), "boot must match"),
        (with_(seq=-1), "seq must be"),
        (with_(seq=1.5), "seq must be"),
        (with_(seq=True), "seq must be"),
        (with_(time_ns="now"), "time_ns must be"),
        (with_(time_ns=2**63), "time_ns must be"),
        (with_(values={}), "values must be a non-empty object"),
        (with_(values={"t": "hot"}), "value t must be a number"),
        (with_(values={"t": True}), "value t must be a number"),
        (with_(values={"seq": 1}), "value name 'seq' is not allowed"),
        (with_(values={"t": 10**400}), "not JSON: number is infinity"),
        (
            b'{"v":1,"device":"d","boot":"b","seq":1,"time_ns":1,"values":{"t":1e309}}',
            "not JSON: number is infinity",
        ),
        (with_(trace=[]), "trace must be an object"),
        (with_(trace={"publish": -5}), "trace.publish must be"),
        (b'{"v":1,"device":"d","boot":"b","seq":1,"time_ns":1,"values":{"t":NaN}}', "not JSON"),
        (b"x" * 70000, "exceeds the limit"),
    ],
)
def test_rejections_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(payload)
    assert reason in caught.value.reason


@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_an_envelope_or_a_reason(payload: bytes) -> None:
    try:
        decode(payload)
    except EnvelopeError as exc:
        assert exc.reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=20,
    )
)
def test_arbitrary_json_in_any_field(value: object) -> None:
    for key in ("device", "boot", "seq", "time_ns", "values", "trace"):
        try:
            envelope = decode(json.dumps({**VALID, key: value}).encode())
        except EnvelopeError as exc:
            assert exc.reason
        else:
            assert decode(encode(envelope)) == envelope
