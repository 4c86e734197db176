"""The whole config.yaml: one section per top-level key, each defined in its own module,
and the checks that span sections."""

from __future__ import annotations

from twinpipe.config.alerting import AlertingConfig
from twinpipe.config.bridge import BridgeConfig
from twinpipe.config.common import Section
from twinpipe.config.display import DisplayConfig
from twinpipe.config.health import HealthConfig
from twinpipe.config.influxdb import InfluxConfig
from twinpipe.config.ingestion import IngestionConfig
from twinpipe.config.kafka import KafkaConfig
from twinpipe.config.latency_probe import LatencyProbeConfig
from twinpipe.config.logs import LoggingConfig
from twinpipe.config.model import ModelConfig
from twinpipe.config.mqtt import MqttConfig
from twinpipe.config.predictive import PredictiveConfig
from twinpipe.config.publisher import PublisherConfig, simulated_device_ids
from twinpipe.config.sensorthings import SensorThingsConfig
from twinpipe.config.twin_state import TwinStateConfig
from twinpipe.names import tag_field_collisions


class Config(Section):
    mqtt: MqttConfig = MqttConfig()
    kafka: KafkaConfig = KafkaConfig()
    influxdb: InfluxConfig = InfluxConfig()
    publisher: PublisherConfig = PublisherConfig()
    bridge: BridgeConfig = BridgeConfig()
    ingestion: IngestionConfig = IngestionConfig()
    display: DisplayConfig = DisplayConfig()
    latency_probe: LatencyProbeConfig = LatencyProbeConfig()
    sensorthings: SensorThingsConfig = SensorThingsConfig()
    twin_state: TwinStateConfig = TwinStateConfig()
    predictive: PredictiveConfig = PredictiveConfig()
    health: HealthConfig = HealthConfig()
    logging: LoggingConfig = LoggingConfig()
    model: ModelConfig = ModelConfig()
    alerting: AlertingConfig = AlertingConfig()

    def telemetry_topics(self, override: list[str] | None) -> list[str]:
        return override or [self.kafka.telemetry_topic]


def cross_section_errors(config: Config) -> list[str]:
    return (
        _tag_collisions(config)
        + _unproduced_datastreams(config)
        + _alert_rule_references(config)
        + _predictive_references(config)
        + _alert_topics(config)
    )


def _predictive_references(config: Config) -> list[str]:
    """predictive.by_property keys are observed properties of the model, by_thing keys its things
    (a typo would silently forecast with the defaults). The shipped by_thing is checked only when
    given: a model without the shipped things need not restate it."""
    predictive = config.predictive
    known = {
        "by_property": ("model.observed_properties", config.model.observed_properties),
        "by_thing": ("model.things", config.model.things),
    }
    errors = []
    for where, (source, names) in known.items():
        if where not in predictive.model_fields_set:
            continue
        for key in getattr(predictive, where):
            if key not in names:
                errors.append(f"predictive.{where}.{key}: not in {source} {sorted(names)}")
    return errors


def _alert_topics(config: Config) -> list[str]:
    """The alerting stage's outputs (alerting.topic, alerting.state_topic) are neither one of its
    inputs (the telemetry topics, alerting.anomaly_topic) nor each other."""
    settings = config.alerting
    inputs = {topic: "alerting.topics" for topic in config.telemetry_topics(settings.topics)}
    if settings.topics is None:
        inputs = {config.kafka.telemetry_topic: "kafka.telemetry_topic (alerting.topics is null)"}
    if settings.anomaly_topic:
        inputs.setdefault(settings.anomaly_topic, "alerting.anomaly_topic")
    errors = []
    for key, topic in (("alerting.topic", settings.topic), ("alerting.state_topic", settings.state_topic)):
        if topic in inputs:
            errors.append(f"{key}: {topic!r} is also an input ({inputs[topic]}); give it a topic of its own")
    if settings.topic == settings.state_topic:
        errors.append(
            f"alerting.state_topic: {settings.state_topic!r} is also alerting.topic; the compacted state"
            " needs a topic of its own"
        )
    return errors


def _alert_rule_references(config: Config) -> list[str]:
    """A rule names a known observed property; its overrides a known thing (one that declares a
    datastream of that property, when it declares any), and a datastream ("<device>:<value>") that
    the model resolves to that property (twinpipe.model)."""
    from twinpipe.model import TwinModel  # the model's resolution; imported late (it imports config)

    model = TwinModel(config.model)
    properties = config.model.observed_properties
    errors = []
    for rule_id, rule in config.alerting.rules.items():
        where = f"alerting.rules.{rule_id}"
        if rule.observed_property not in properties:
            errors.append(
                f"{where}.observed_property: {rule.observed_property!r} is not in"
                f" model.observed_properties {sorted(properties)}"
            )
            continue
        for thing in rule.things:
            if thing not in config.model.things:
                errors.append(f"{where}.things.{thing}: not in model.things {sorted(config.model.things)}")
                continue
            declared = config.model.things[thing].datastreams
            observed = {stream.observed_property for stream in declared.values()}
            if declared and rule.observed_property not in observed:
                errors.append(
                    f"{where}.things.{thing}: model.things.{thing} has no datastream of"
                    f" {rule.observed_property!r} (it declares {sorted(declared)}): never applies"
                )
        for key in rule.datastreams:
            device, sep, value = key.partition(":")
            stream = model.datastream(device, value) if sep and device and value else None
            if stream is None:
                errors.append(
                    f"{where}.datastreams.{key}: not a datastream of the model"
                    " (expected <device>:<value name> of a device in model.things)"
                )
            elif stream.observed_property_id != rule.observed_property:
                errors.append(
                    f"{where}.datastreams.{key}: observes {stream.observed_property_id!r},"
                    f" not {rule.observed_property!r}"
                )
    return errors


def _unproduced_datastreams(config: Config) -> list[str]:
    """A thing entry that matches the serial board or simulated boards may only declare datastreams
    for values those produce (frame.fields, simulator.sensors): anything else is a typo that would
    describe a stream that never flows. Entries matching neither (other producers, replays) are not
    checked: their values are not known here."""
    serial = config.publisher.serial
    simulated = simulated_device_ids(config.publisher.simulator)
    errors = []
    for key, thing in config.model.things.items():
        produced: dict[str, list[str]] = {}
        if serial.frame.fields and thing.matches(serial.device_id):
            produced["publisher.serial.frame.fields"] = list(serial.frame.fields)
        if any(thing.matches(device) for device in simulated):
            produced["publisher.simulator.sensors"] = list(config.publisher.simulator.sensors)
        if not produced:
            continue
        known = {name for names in produced.values() for name in names}
        for value in thing.datastreams:
            if value not in known:
                errors.append(
                    f"model.things.{key}.datastreams.{value}: {thing.devices!r} never produces {value!r}"
                    f" (it produces {sorted(known)}: {', '.join(produced)})"
                )
    return errors


def _tag_collisions(config: Config) -> list[str]:
    """A configured tag key that is also a configured value name would hide the tag (twinpipe.names)."""
    values = {"publisher.simulator.sensors": list(config.publisher.simulator.sensors)}
    values["publisher.serial.frame.fields"] = config.publisher.serial.frame.fields
    tags = {"ingestion.tags": list(config.ingestion.tags)}
    tags |= {f"ingestion.device_tags.{d}": list(t) for d, t in config.ingestion.device_tags.items()}
    return [
        f"{where}.{name}: tag key {name!r} is also a value name in {source}; a field of the same name"
        " hides the tag"
        for where, keys in tags.items()
        for source, names in values.items()
        for name in tag_field_collisions(keys, names)
    ]
