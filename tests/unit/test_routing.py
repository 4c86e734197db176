"""The bridge's routing rules without servers: which Kafka topic, and whether the device may be there."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_kafka_bridge.routing import Router, RoutingError
from twinpipe.config import Route, default_device_level
from twinpipe.envelope import DEVICE_PATTERN, PROBE_DEVICE

PROBE_TOPIC = f"twin/{PROBE_DEVICE}/telemetry"
DEVICES = st.from_regex(DEVICE_PATTERN, fullmatch=True).filter(lambda d: "\n" not in d)


def router(*routes: Route) -> Router:
    return Router(list(routes) or [Route(mqtt_filter="twin/+/telemetry")], "twin.telemetry",
                  probe_topic=PROBE_TOPIC, probe_device=PROBE_DEVICE)  # fmt: skip


def kind_of(route: Router, topic: str, device: str) -> str:
    with pytest.raises(RoutingError) as caught:
        route.kafka_topic(topic, device)
    return caught.value.kind


@pytest.mark.parametrize(
    ("mqtt_filter", "level"),
    [
        ("twin/+/telemetry", 1),
        ("+", 0),
        ("twin/#", 1),
        ("#", 0),
        ("a/+/+", None),
        ("a/b", None),
        ("a/+/#", 1),
    ],
)
def test_default_device_level_is_the_single_plus_or_a_final_hash(mqtt_filter: str, level: int | None) -> None:
    assert default_device_level(mqtt_filter) == level


@given(topic_device=DEVICES, envelope_device=DEVICES)
def test_an_envelope_passes_exactly_when_its_device_is_the_topics(
    topic_device: str, envelope_device: str
) -> None:
    """Before: any device was accepted on any device's topic."""
    default = router()
    topic = f"twin/{topic_device}/telemetry"
    if topic_device == envelope_device:
        assert default.kafka_topic(topic, envelope_device) == "twin.telemetry"
    else:
        assert kind_of(default, topic, envelope_device) == "device_mismatch"


@given(topic_device=DEVICES, envelope_device=DEVICES)
def test_a_route_with_check_device_false_takes_any_device_but_the_probe(
    topic_device: str, envelope_device: str
) -> None:
    gateway = router(Route(mqtt_filter="gw/+/data", check_device=False))
    assert gateway.kafka_topic(f"gw/{topic_device}/data", envelope_device) == "twin.telemetry"
    assert kind_of(gateway, f"gw/{topic_device}/data", PROBE_DEVICE) == "reserved_device"


def test_the_probe_device_only_on_the_probe_topic() -> None:
    default = router()
    assert default.kafka_topic(PROBE_TOPIC, PROBE_DEVICE) == "twin.telemetry"
    with pytest.raises(
        RoutingError, match="reserved for the latency probe, which publishes only on"
    ) as caught:
        default.kafka_topic("twin/d1/telemetry", PROBE_DEVICE)
    assert caught.value.kind == "reserved_device"
    assert kind_of(default, PROBE_TOPIC, "d1") == "device_mismatch"  # another device on the probe's topic
    nowhere = Router(
        [Route(mqtt_filter="twin/+/telemetry")], "t", probe_topic=None, probe_device=PROBE_DEVICE
    )
    assert kind_of(nowhere, PROBE_TOPIC, PROBE_DEVICE) == "reserved_device"


def test_an_explicit_device_level_under_a_hash() -> None:
    site = router(Route(mqtt_filter="site/#", device_level=2, kafka_topic="site.{1}"))
    assert site.kafka_topic("site/lab/d1/env", "d1") == "site.lab"
    with pytest.raises(RoutingError, match=r"at level 2 \(absent\)"):
        site.kafka_topic("site/lab", "d1")
    assert kind_of(site, "site/lab/d2/env", "d1") == "device_mismatch"


def test_a_template_level_the_topic_lacks_is_unroutable_not_a_crash() -> None:
    """Before: IndexError in the forwarding thread."""
    deep = router(Route(mqtt_filter="twin/#", kafka_topic="twin.{3}"))
    assert deep.kafka_topic("twin/d1/x/y", "d1") == "twin.y"
    with pytest.raises(RoutingError, match="names a level") as caught:
        deep.kafka_topic("twin/d1", "d1")
    assert caught.value.kind == "unroutable"


def test_a_fixed_topic_for_one_device_checks_that_device() -> None:
    single = router(Route(mqtt_filter="lab/nucleo-7/env", device_level=1))
    assert single.kafka_topic("lab/nucleo-7/env", "nucleo-7") == "twin.telemetry"
    assert kind_of(single, "lab/nucleo-7/env", "nucleo-8") == "device_mismatch"
