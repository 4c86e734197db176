"""Client factories: every stage connects to MQTT and Kafka with the same auth, TLS and protocol choices."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twinpipe.config import KafkaConfig, MqttConfig
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("twinpipe.mqtt")


def mqtt_client(config: MqttConfig, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT 5 client with credentials and TLS from config; connecting is left to the caller."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if config.username:
        client.username_pw_set(config.username, config.secret_password())
    if config.tls is not None:
        tls = config.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
        )
    client.reconnect_delay_set(min_delay=config.reconnect_min_s, max_delay=config.reconnect_max_s)
    throttled = ThrottledLog(log, interval_s=30)
    client.on_connect_fail = lambda _client, _userdata: throttled.warning(
        "connect", "cannot connect to MQTT broker %s:%d; retrying", config.host, config.port
    )
    return client


def connect_properties(session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def kafka_producer(config: KafkaConfig, **settings: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas, because every stage promises at-least-once."""
    return KafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        **config.security(),
        acks="all",
        **settings,
    )


def kafka_consumer(config: KafkaConfig, group_id: str | None, **settings: Any) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        **config.security(),
        group_id=group_id,
        enable_auto_commit=False,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        **settings,
    )


def ensure_topics(config: KafkaConfig, names: list[str]) -> None:
    """Create missing topics with the configured partitions, so consumers see them from the start."""
    if not config.create_topics:
        return
    admin = KafkaAdminClient(bootstrap_servers=config.bootstrap_servers, **config.security())
    try:
        settings = {"num_partitions": config.partitions, "replication_factor": config.replication_factor}
        for name in sorted(set(names) - set(admin.list_topics())):
            with contextlib.suppress(TopicAlreadyExistsError):  # another stage created it meanwhile
                admin.create_topics({name: settings})
    finally:
        admin.close()


def rebalance_listener(
    on_revoked: Callable[[list[TopicPartition]], None],
    on_assigned: Callable[[list[TopicPartition]], None] = lambda partitions: None,
) -> ConsumerRebalanceListener:
    """A listener for `KafkaConsumer.subscribe` that hands the revoked and the assigned partitions to
    the callbacks. kafka-python calls them on its IO thread, during poll()."""

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
            on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            on_assigned(list(assigned))

    return Listener()
