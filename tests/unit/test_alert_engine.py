"""The engine's state across a restart or rebalance (alerting/engine.py, alerting/store.py), without
servers: stopping anywhere, writing the state as the state topic holds it, and reading it back in a
new engine gives the transitions an engine that never stopped gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alerting.engine import Engine, state_key
from alerting.outputs import AlertmanagerForwarder, _iso
from alerting.rules import NS
from alerting.ruleset import RuleSet, fingerprint
from alerting.store import Documents, apply, encode
from twinpipe.config import parse_config
from twinpipe.model import TwinModel

T0 = 1_764_547_200 * NS
SOURCE = ("twin.telemetry", 2)
GROUP = "twinpipe-alerting"
RULES = {
    "hot": {"observed_property": "temperature", "kind": "above", "raise": 35, "clear": 33, "for_s": 3},
    "steep": {"observed_property": "temperature", "kind": "rate_of_change", "raise": 2, "clear": 1,
              "window_s": 5},
    "silent": {"observed_property": "temperature", "kind": "no_data", "silence_s": 30},
}  # fmt: skip


def engine() -> Engine:
    config = parse_config({"alerting": {"rules": RULES}}, {})
    return Engine(RuleSet(config.alerting, TwinModel(config.model)))


def through_the_state_topic(old: Engine) -> Documents:
    """What a new owner reads back: every snapshot record, in order, the latest per key winning."""
    documents: Documents = {}
    for (topic, partition), device, document in old.snapshots():
        key = state_key(GROUP, topic, device).encode()
        apply(documents, partition, key, encode({**document, "group": GROUP}), GROUP)
    return documents


def feed(target: Engine, readings: list[tuple[int, float]]) -> list[tuple[str, str, int]]:
    found = []
    for time_ns, value in readings:
        for alert in target.reading(
            SOURCE, "sim-1", {"temperature": value, "humidity": 50.0}, time_ns, time_ns
        ):
            found.append((alert.event["rule"], alert.event["state"], alert.event["time_ns"]))
    return found


readings_strategy = st.lists(
    st.tuples(st.integers(1, 3 * NS), st.floats(20, 45).map(lambda v: round(v, 2))), min_size=1, max_size=60
)


@given(readings_strategy, st.data())
def test_a_restart_anywhere_gives_the_transitions_of_no_restart(steps: list, data: st.DataObject) -> None:
    readings, now = [], T0
    for gap, value in steps:
        now += gap
        readings.append((now, value))
    expected = feed(engine(), readings)

    cut = data.draw(st.integers(0, len(readings)))
    first = engine()
    got = feed(first, readings[:cut])
    second = engine()
    second.load(SOURCE, through_the_state_topic(first).get(SOURCE, {}), readings[cut - 1][0] if cut else T0)
    # After a crash, the records since the last commit come again: any suffix of what was processed.
    again = data.draw(st.integers(0, cut))
    got += feed(second, readings[again:])
    assert got == expected


def test_a_firing_alert_is_handed_to_the_new_owner_and_not_fired_again() -> None:
    first = engine()
    feed(first, [(T0 + i * NS, 36.0) for i in range(5)])  # pending at 0 s, firing at 3 s
    second = engine()
    firing = second.load(SOURCE, through_the_state_topic(first)[SOURCE], T0 + 5 * NS)
    assert [(a.event["rule"], a.event["state"], a.event["starts_ns"]) for a in firing] == [
        ("hot", "firing", T0)
    ]
    assert feed(second, [(T0 + 5 * NS, 36.0), (T0 + 6 * NS, 37.0)]) == []
    assert feed(second, [(T0 + 7 * NS, 30.0)]) == [("hot", "resolved", T0 + 7 * NS)]
    assert {(r, s) for r, _, s in second.active()} == set()


def test_a_revoked_partition_is_dropped_with_its_timers() -> None:
    owner = engine()
    feed(owner, [(T0, 25.0)])
    assert owner.tick(T0 + 30 * NS)[0].event["rule"] == "silent"
    # What the Alertmanager forwarder forgets: the new owner sends these from now on.
    assert owner.fingerprints(SOURCE) == {
        fingerprint(rule, "sim-1", "sim-1:temperature") for rule in ("hot", "steep", "silent")
    }
    owner.drop(SOURCE)
    assert owner.tick(T0 + 90 * NS) == [] and list(owner.active()) == [] and owner.snapshots() == []


def test_a_rule_removed_from_the_config_leaves_no_state_behind() -> None:
    first = engine()
    feed(first, [(T0, 36.0)])
    config = parse_config({"alerting": {"rules": {"steep": RULES["steep"]}}}, {})
    second = Engine(RuleSet(config.alerting, TwinModel(config.model)))
    second.load(SOURCE, through_the_state_topic(first)[SOURCE], T0)
    assert list(second.active()) == []


def test_state_of_another_consumer_group_on_the_same_topic_is_ignored() -> None:
    """Two deployments (group ids) share alerting.state_topic: each reads back only its own state."""
    other = engine()
    feed(other, [(T0 + i * NS, 36.0) for i in range(5)])  # firing in group "staging"
    documents: Documents = {}
    for (topic, partition), device, document in other.snapshots():
        key = state_key("staging", topic, device).encode()
        apply(documents, partition, key, encode({**document, "group": "staging"}), GROUP)
        legacy = f"{topic}/{device}".encode()  # written before the key held the group
        apply(documents, partition, legacy, encode(document), GROUP)
        # A group id that is a prefix of another one's key: the document's group decides.
        apply(documents, partition, f"{GROUP}/x/{device}".encode(), encode({**document, "group": "y"}), GROUP)
    assert documents == {}
    mine = engine()
    assert mine.load(SOURCE, documents.get(SOURCE, {}), T0 + 5 * NS) == []
    assert list(mine.active()) == []


def test_a_severity_edited_while_firing_resolves_the_old_label_set_in_alertmanager() -> None:
    """Alertmanager tells alerts apart by all their labels: the restarted stage sends the alert under
    its new severity and resolves the one under the old severity (endsAt = now), not two firing."""
    first = engine()
    feed(first, [(T0 + i * NS, 36.0) for i in range(5)])  # hot: firing, severity warning
    edited = {**RULES, "hot": {**RULES["hot"], "severity": "critical"}}
    config = parse_config({"alerting": {"rules": edited, "alertmanager": {"enabled": True}}}, {})
    second = Engine(RuleSet(config.alerting, TwinModel(config.model)))
    now = T0 + 60 * NS
    loaded = second.load(SOURCE, through_the_state_topic(first)[SOURCE], now)
    assert [(a.event["state"], a.event["severity"]) for a in loaded] == [
        ("firing", "critical"),
        ("resolved", "warning"),
    ]
    forwarder = AlertmanagerForwarder(config.alerting.alertmanager)  # its thread is not started
    for alert in loaded:
        forwarder.put(alert.event)
    sent = {a["labels"]["severity"]: a for a in forwarder.body(now)}
    assert set(sent) == {"critical", "warning"}
    assert sent["warning"]["endsAt"] == _iso(now) < sent["critical"]["endsAt"]
    # Unchanged severity: only the firing alert, nothing resolved.
    first = engine()
    feed(first, [(T0 + i * NS, 36.0) for i in range(5)])
    again = engine().load(SOURCE, through_the_state_topic(first)[SOURCE], now)
    assert [(a.event["state"], a.event["severity"]) for a in again] == [("firing", "warning")]
