"""The config that closes the command loop on a run's own topics, for tests, benchmarks and the demo's
local servers: the state stage's command and event topics are the ones the bridge's downlink reads and
writes, and the publisher's command session listens where the downlink publishes."""

from __future__ import annotations

from typing import Any


def command_loop(mqtt_prefix: str, run: str) -> dict[str, Any]:
    """Config overrides (twin_state, bridge.downlink, publisher.commands) for the Kafka topics
    `cmd-<run>` (commands), `cev-<run>` (command events), `state-<run>` (state) and the MQTT topics
    `<mqtt_prefix>/{device}/command[/events]`."""
    commands, events = f"cmd-{run}", f"cev-{run}"
    command_topic, events_topic = mqtt_prefix + "/{device}/command", mqtt_prefix + "/{device}/command/events"
    return {
        "twin_state": {
            "command_topic": commands,
            "event_topic": events,
            "state_topic": f"state-{run}",
            "group_id": f"twin-{run}",
        },
        "bridge": {
            "downlink": {
                "enabled": True,
                "command_topic": commands,
                "events_topic": events,
                "group_id": f"downlink-{run}",
                "mqtt_command_topic": command_topic,
                "mqtt_events_topic": events_topic,
            }
        },
        "publisher": {
            "commands": {
                "enabled": True,
                "topic_template": command_topic,
                "events_topic_template": events_topic,
                "client_id": f"commands-{run}",
            }
        },
    }
