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
        (with_(device="a/b"), "device id 'a/b' must match"),
        (with_(device=""), "device id '' must match"),
        (with_(device=5), "device must be a string"),
        # `$` also matched before a final newline: "dev\n" was stored with a literal backslash-n.
        (with_(device="dev\n"), "device id 'dev\\n' must match"),
        (with_(device="_probe\n"), "device id '_probe\\n' must match"),
        (with_(values={"t\n": 1}), "value name 't\\n' must match"),
        (with_(boot="b1\n"), "boot must match"),
        (with_(trace={"publish\n": 1}), "trace stage name"),
        # Names InfluxDB cannot store unchanged, or that would hide twinpipe's tag.
        (with_(values={"device": 1}), "value name 'device' is reserved: it is the tag key"),
        (with_(values={"time": 1}), "value name 'time' is reserved: InfluxDB reserves it"),
        (with_(values={"boot": 1}), "value name 'boot' is reserved"),
        (with_(values={"_measurement": 1}), "value name '_measurement' starts with '_'"),
        (with_(values={"": 1}), "value name is empty"),
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
        (with_(values={"seq": 1}), "value name 'seq' is reserved"),
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


def test_the_probe_device_is_accepted_so_its_readings_are_stored() -> None:
    assert decode(with_(device="_probe")).device == "_probe"


def test_unknown_top_level_keys_are_ignored_and_kept_within_version_1() -> None:
    """Forward compatibility: a fleet may add a key without a version bump; older consumers ignore
    it, and a stage that re-encodes (the bridge) passes it on."""
    envelope = decode(with_(site="lab", calibration={"t": 0.1}))
    assert envelope.extra == {"site": "lab", "calibration": {"t": 0.1}}
    assert envelope.values == {"temperature": 24.5, "humidity": 60.0}
    again = decode(encode(envelope))
    assert again == envelope and again.extra == envelope.extra
    assert json.loads(encode(envelope))["v"] == 1


def test_an_unknown_key_cannot_override_a_known_one_when_re_encoded() -> None:
    envelope = decode(with_(note="x"))
    envelope.extra["device"] = "other"  # only possible in code; decode never puts known keys there
    assert json.loads(encode(envelope))["device"] == "nucleo-1"


def test_a_breaking_change_is_a_new_version_and_is_refused() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(with_(v=2, values_v2=[1, 2]))
    assert caught.value.kind == "version"


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
