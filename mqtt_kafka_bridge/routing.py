"""Which Kafka topic an MQTT message goes to: the first route whose filter matches its topic."""

from __future__ import annotations

from functools import lru_cache

from paho.mqtt.client import topic_matches_sub

from twinpipe.config import KAFKA_TOPIC_PATTERN, Route


class RoutingError(ValueError):
    pass


class Router:
    def __init__(self, routes: list[Route], default_topic: str, shared_group: str | None = None) -> None:
        self._routes = [(route.mqtt_filter, route.kafka_topic or default_topic) for route in routes]
        self._shared_group = shared_group
        # Devices publish on the same few topics over and over; matching them every time was 8 % of
        # the bridge's CPU. Errors are not cached, so a bad topic is reported each time.
        self.kafka_topic = lru_cache(maxsize=4096)(self._kafka_topic)

    def subscriptions(self) -> list[str]:
        """The filters to subscribe to; `$share/<group>/...` lets several bridges split the load."""
        prefix = f"$share/{self._shared_group}/" if self._shared_group else ""
        return [prefix + mqtt_filter for mqtt_filter, _ in self._routes]

    def _kafka_topic(self, mqtt_topic: str, device: str) -> str:
        """Render the matching route's template with {device} and the topic levels {0}, {1}, ..."""
        for mqtt_filter, template in self._routes:
            if topic_matches_sub(mqtt_filter, mqtt_topic):
                topic = template.format(*mqtt_topic.split("/"), device=device)
                if not KAFKA_TOPIC_PATTERN.match(topic):
                    raise RoutingError(
                        f"route {mqtt_filter!r} maps {mqtt_topic!r} to invalid Kafka topic {topic!r}"
                    )
                return topic
        raise RoutingError(f"no route matches MQTT topic {mqtt_topic!r}")
