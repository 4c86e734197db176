"""Baseline: the MQTT → Kafka bridge as hobby projects write it — QoS 0, json.loads, print, and
KafkaProducer().send() with the library's defaults. Not for use: it loses messages by design."""

from __future__ import annotations

import json
import sys

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from paho.mqtt.enums import CallbackAPIVersion


def main(mqtt_port: int, topic_filter: str, bootstrap: str, kafka_topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap])

    def on_connect(client: mqtt.Client, *_args: object) -> None:
        client.subscribe(topic_filter, qos=0)

    def on_subscribe(*_args: object) -> None:
        print("subscribed", file=sys.stderr, flush=True)

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        data = json.loads(message.payload)
        print(data)
        producer.send(kafka_topic, message.payload)

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", mqtt_port)
    client.loop_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
