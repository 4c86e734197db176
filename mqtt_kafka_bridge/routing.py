"""Which Kafka topic an MQTT message goes to (the first route whose filter matches its topic), and
whether the envelope may be there: its device must be the one the topic names, and the reserved
probe device only comes on the latency probe's own topic."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from paho.mqtt.client import topic_matches_sub

from twinpipe.config import KAFKA_TOPIC_PATTERN, Route


class RoutingError(ValueError):
    """A message no route may take; `kind` labels the dead-letter metric: unroutable (no route, or no
    valid Kafka topic), device_mismatch (envelope device ≠ the topic's device level) or reserved_device
    (the probe device outside the probe topic)."""

    def __init__(self, reason: str, kind: str = "unroutable") -> None:
        self.kind = kind
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class _Route:
    mqtt_filter: str
    template: str
    device_level: int | None  # None: the route does not check the device


def check_device(
    mqtt_topic: str, device: str, level: int | None, probe_topic: str | None, probe: str
) -> None:
    """Raise RoutingError unless `device` may arrive on `mqtt_topic`.

    `level` is the topic level (0-based) that names the device, or None for a route that does not
    check. `probe_topic` is where the latency probe publishes device `probe`; that device is accepted
    there only, whatever the route says (None: nowhere).
    """
    if device == probe and mqtt_topic != probe_topic:
        raise RoutingError(
            f"device {device!r} on {mqtt_topic!r}: that device id is reserved for the latency probe, which "
            f"publishes only on {probe_topic!r}",
            "reserved_device",
        )
    if level is None:
        return
    levels = mqtt_topic.split("/")
    named = levels[level] if level < len(levels) else None
    if named != device:
        what = f"level {level} ({named!r})" if named is not None else f"level {level} (absent)"
        raise RoutingError(
            f"envelope device {device!r} differs from the device named by topic {mqtt_topic!r} at {what}; "
            "a route that allows this sets device_level or check_device: false",
            "device_mismatch",
        )


class Router:
    def __init__(
        self,
        routes: list[Route],
        default_topic: str,
        shared_group: str | None = None,
        probe_topic: str | None = None,
        probe_device: str = "_probe",
    ) -> None:
        self._routes = [
            _Route(route.mqtt_filter, route.kafka_topic or default_topic, route.device_index())
            for route in routes
        ]
        self._shared_group = shared_group
        self._probe_topic = probe_topic
        self._probe_device = probe_device
        # Devices publish on the same few topics over and over; matching them every time was 8 % of
        # the bridge's CPU. Errors are not cached, so a bad topic is reported each time.
        self.kafka_topic = lru_cache(maxsize=4096)(self._kafka_topic)

    def subscriptions(self) -> list[str]:
        """The filters to subscribe to; `$share/<group>/...` lets several bridges split the load."""
        prefix = f"$share/{self._shared_group}/" if self._shared_group else ""
        return [prefix + route.mqtt_filter for route in self._routes]

    def _kafka_topic(self, mqtt_topic: str, device: str) -> str:
        """Render the matching route's template with {device} and the topic levels {0}, {1}, ...,
        after checking that `device` may come on `mqtt_topic` (see check_device)."""
        for route in self._routes:
            if topic_matches_sub(route.mqtt_filter, mqtt_topic):
                try:
                    topic = route.template.format(*mqtt_topic.split("/"), device=device)
                except IndexError:  # a {n} beyond this topic's levels (possible under '#')
                    raise RoutingError(
                        f"route {route.mqtt_filter!r}: {route.template!r} names a level {mqtt_topic!r} lacks"
                    ) from None
                if not KAFKA_TOPIC_PATTERN.match(topic):
                    raise RoutingError(
                        f"route {route.mqtt_filter!r} maps {mqtt_topic!r} to invalid Kafka topic {topic!r}"
                    )
                check_device(mqtt_topic, device, route.device_level, self._probe_topic, self._probe_device)
                return topic
        raise RoutingError(f"no route matches MQTT topic {mqtt_topic!r}")
