"""The twin state's pure parts: the lifecycle functions (property-tested over orders, duplicates and
timings of evidence), the record codecs, the model's settings and the command line's value parsing."""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_state import lifecycle
from twin_state.lifecycle import CLOSED, FORWARD, RANK
from twin_state.stage import TwinStateStage
from twin_state.store import Twin
from twinpipe import command_messages
from twinpipe.command import CommandError, parse_assignments
from twinpipe.config import ConfigError, parse_config
from twinpipe.config.model import DEFAULT_MODEL
from twinpipe.envelope import Envelope, encode
from twinpipe.metrics import sample
from twinpipe.model import TwinModel

T0 = 1_796_000_000_000_000_000
S = 1_000_000_000
SETTINGS = {"heater": True, "report_interval_s": 2}


def command(version: int = 1, settings: dict | None = None, expires_s: float = 60) -> dict:
    return {
        "v": 1,
        "id": f"c{version}",
        "device": "sim-1",
        "settings": settings or dict(SETTINGS),
        "desired_version": version,
        "created_ns": T0,
        "expires_ns": T0 + int(expires_s * S),
    }


def event(state: str, at_s: float, command_id: str = "c1", reported: dict | None = None) -> dict:
    by = "bridge" if state in ("sent", "expired") else "publisher"
    document = {"id": command_id, "device": "sim-1", "state": state, "time_ns": T0 + int(at_s * S), "by": by}
    document["detail"] = ""
    if state == "acknowledged":
        document["reported"] = dict(SETTINGS) if reported is None else reported
    return document


def queued(cmd: dict | None = None) -> dict:
    state, transitions = lifecycle.queue(lifecycle.new_state("sim-1"), cmd or command(), T0)
    assert [t.state for t in transitions] == ["queued"]
    return state


def run(state: dict, events: list[dict]) -> tuple[dict, list[str]]:
    """Apply events in order; the journal states the command passed through, in order."""
    seen = []
    for e in events:
        state, transitions = lifecycle.apply_event(state, e)
        seen += [t.state for t in transitions]
    return state, seen


HAPPY = [event(s, i + 1) for i, s in enumerate(["sent", "delivered", "written", "acknowledged"])]


def test_the_happy_path_applies_and_clears_desired() -> None:
    state = queued()
    assert state["desired"] == state["delta"] == SETTINGS and state["desired_version"] == 1
    state, seen = run(state, HAPPY)
    assert seen == ["sent", "delivered", "written", "acknowledged", "applied"]
    assert state["desired"] == {} and state["delta"] == {}
    assert state["reported"] == SETTINGS and state["reported_version"] == 1
    assert lifecycle.open_commands(state) == []


def test_an_acknowledgement_reporting_other_values_fails_and_keeps_desired() -> None:
    state, seen = run(queued(), [event("acknowledged", 1, reported={"heater": True, "report_interval_s": 1})])
    assert seen == ["acknowledged", "failed"]
    entry = state["commands"][0]
    assert "report_interval_s=1" in entry["history"][-1]["detail"]
    assert state["desired"] == {"report_interval_s": 2} == state["delta"]


def test_expiry_only_before_acknowledgement_and_late_evidence_does_not_revive() -> None:
    state = queued(command(expires_s=5))
    assert lifecycle.expire(state, T0 + 4 * S)[0] is state
    state, transitions = lifecycle.expire(state, T0 + 5 * S)
    assert [t.state for t in transitions] == ["expired"] and transitions[0].since_queued_s == 5
    state, seen = run(state, [event("sent", 6), event("acknowledged", 7, reported={"heater": True})])
    assert seen == [] and state["commands"][0]["state"] == "expired"
    assert [h.get("late") for h in state["commands"][0]["history"]] == [None, None, True, True]
    assert state["reported"] == {"heater": True}  # the board has it, late or not
    acknowledged, _ = run(queued(command(expires_s=5)), HAPPY[:1] + [event("acknowledged", 2)])
    assert lifecycle.expire(acknowledged, T0 + 60 * S)[0] is acknowledged


def test_events_before_their_command_wait_for_it() -> None:
    state, seen = run(lifecycle.new_state("sim-1"), [HAPPY[1], HAPPY[3]])
    assert seen == [] and len(state["unmatched"]) == 2
    state, transitions = lifecycle.queue(state, command(), T0)
    assert [t.state for t in transitions] == ["queued", "delivered", "acknowledged", "applied"]
    assert state["unmatched"] == [] and state["desired"] == {}


def test_a_replayed_or_pruned_command_changes_nothing() -> None:
    state, _ = run(queued(), HAPPY)
    assert lifecycle.queue(state, command(), T0)[0] is state
    for version in range(2, 60):
        state, _ = lifecycle.queue(state, command(version, {"heater": version % 2 == 0}), T0, journal_size=5)
    assert len(state["commands"]) <= 5 + len(lifecycle.open_commands(state))
    assert lifecycle.queue(state, command(1), T0)[0] is state  # pruned long ago, older version


def test_readings_only_move_forward_in_event_time() -> None:
    state = lifecycle.new_state("sim-1")
    state = lifecycle.apply_readings(state, {"temperature": 0.0}, T0 + 2 * S)
    assert state["reported"] == {"temperature": 0.0} and state["reported_version"] == 1
    assert lifecycle.apply_readings(state, {"temperature": 9.0}, T0 + S) is state
    same_value = lifecycle.apply_readings(state, {"temperature": 0.0}, T0 + 3 * S)
    assert (
        same_value["reported_version"] == 1
        and same_value["metadata"]["reported"]["temperature"]["time_ns"] == T0 + 3 * S
    )


EVENT_STATES = ["sent", "delivered", "written", "acknowledged", "failed", "expired"]
evidence = st.lists(
    st.tuples(st.sampled_from(EVENT_STATES), st.integers(0, 120), st.booleans()), min_size=1, max_size=12
)


def build(items: list[tuple[str, int, bool]]) -> list[dict]:
    """Events from (state, second, board reports the command's settings or not)."""
    wrong = {"heater": False, "report_interval_s": 2}
    return [event(s, t, reported=None if right else wrong) for s, t, right in items]


@settings(max_examples=300, deadline=None)
@given(evidence, st.lists(st.integers(0, 130), max_size=4))
def test_states_only_move_forward_and_versions_only_grow(items: list, ticks: list[int]) -> None:
    state = queued(command(expires_s=60))
    steps = [("event", e) for e in build(items)] + [("tick", T0 + t * S) for t in ticks]
    states = ["queued"]
    versions = [(state["desired_version"], state["reported_version"])]
    for kind, what in steps:
        if kind == "event":
            state, _ = lifecycle.apply_event(state, what)
        else:
            state, _ = lifecycle.expire(state, what)
        states.append(state["commands"][0]["state"])
        versions.append((state["desired_version"], state["reported_version"]))
    ranks = [RANK[s] for s in states]
    assert ranks == sorted(ranks), states
    closed = [s for s in states if s in CLOSED]
    assert len(set(closed)) <= 1, f"a closed command never changes: {states}"
    assert [v for v, _ in versions] == sorted(v for v, _ in versions)
    assert [r for _, r in versions] == sorted(r for _, r in versions)
    entered = [h["state"] for h in state["commands"][0]["history"] if not h.get("late")]
    assert entered[0] == "queued" and state["commands"][0]["state"] in entered


@settings(max_examples=300, deadline=None)
@given(evidence, st.data())
def test_duplicates_change_nothing(items: list, data: st.DataObject) -> None:
    """Every event delivered again (at once, or later in the stream) leaves the same state as once."""
    events = build(items)
    once, seen_once = run(queued(), events)
    repeated = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    twice, seen_twice = run(queued(), events + [copy.deepcopy(e) for e in repeated])
    assert twice == once and seen_twice == seen_once
    doubled = [copy.deepcopy(e) for e in events for _ in (0, 1)]
    assert run(queued(), doubled) == (once, seen_once)


@settings(max_examples=300, deadline=None)
@given(st.permutations(HAPPY), st.integers(0, 3))
def test_any_order_of_the_forward_evidence_ends_applied(order: list[dict], repeats: int) -> None:
    events = list(order) + list(order[:repeats])
    state, seen = run(queued(), events)
    entry = state["commands"][0]
    assert entry["state"] == "applied" and seen.count("applied") == 1
    assert state["desired"] == {} and state["reported"] == SETTINGS and state["reported_version"] == 1
    assert sorted(h["state"] for h in entry["history"]) == sorted([*FORWARD])


def test_the_records_the_stage_reads_are_the_shared_command_messages() -> None:
    """The stage keeps commands and events as command_messages' to_json() dicts: what the bridge and
    the publisher write is what the lifecycle reads."""
    good = command()
    assert command_messages.decode_command(orjson.dumps(good)).to_json() == good
    for state in [*lifecycle.EVENT_STATES]:
        record = {**event(state, 1), "v": 1}
        assert command_messages.decode_event(orjson.dumps(record)).to_json() == record
    with pytest.raises(command_messages.CommandError, match="state: expected one of"):
        command_messages.decode_event(orjson.dumps({**event("sent", 0), "v": 1, "state": "applied"}))
    with pytest.raises(command_messages.CommandError, match="tombstone"):
        command_messages.decode_command(None)
    assert set(lifecycle.EVENT_STATES) == set(command_messages.STATES)


def test_model_settings_validate_values_with_reasons() -> None:
    model = TwinModel(parse_config({}, {}).model)
    assert set(model.settings("sim-7")) == set(model.settings("nucleo-1")) == {"heater", "report_interval_s"}
    assert model.settings("greensboro") == {}
    problems = model.settings_problems(
        "sim-1", {"heater": 1, "report_interval_s": 3601, "fan": True, "report_interval_s_": 1}
    )
    assert problems["heater"] == "expected true or false, got 1"
    assert problems["report_interval_s"] == "3601 s is above the maximum 3600.0 s"
    assert "no setting 'fan'" in problems["fan"]
    assert model.settings_problems("sim-1", {"heater": False, "report_interval_s": 0.1}) == {}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"kind": "bool", "minimum": 0}, "minimum: only for kind number"),
        ({"kind": "enum"}, "values: kind enum needs"),
        ({"kind": "number", "minimum": 5, "maximum": 1}, "minimum (5.0) must not exceed maximum (1.0)"),
        ({"kind": "number", "unit": "degC"}, "not a UCUM code"),
        ({"kind": "switch"}, "kind"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_key(setting: dict, message: str) -> None:
    things = copy.deepcopy(DEFAULT_MODEL["things"])
    things["simulated"]["settings"] = {"mode": setting}
    with pytest.raises(ConfigError) as raised:
        parse_config({"model": {"things": things}}, {})
    text = "\n".join(raised.value.errors)
    assert "things.simulated.settings.mode" in text and message in text, text


@pytest.mark.parametrize("name", ["wall1_temperature", "temperature", "ambient_humidity"])
def test_a_setting_may_not_share_a_name_with_a_datastream(name: str) -> None:
    things = copy.deepcopy(DEFAULT_MODEL["things"])
    things["nucleo"]["settings"] = {name: {"kind": "bool"}}
    with pytest.raises(ConfigError) as raised:
        parse_config({"model": {"things": things}}, {})
    assert f"things.nucleo.settings.{name}" in str(raised.value) and "reported state" in str(raised.value)


def test_the_command_line_reads_values_as_typed() -> None:
    parsed = parse_assignments(["heater=on", "report_interval_s=2", "mode=eco", "x=0.5", "y=OFF"])
    assert parsed == {"heater": True, "report_interval_s": 2, "mode": "eco", "x": 0.5, "y": False}
    with pytest.raises(CommandError, match="expected NAME=VALUE"):
        parse_assignments(["heater"])


def test_the_store_persists_commands_at_once_and_readings_alone_at_most_every_interval() -> None:
    twin = Twin(lambda device: {"heater", "report_interval_s"}, readings_persist_s=3600)
    seen: list[str] = []
    twin.on_transitions.append(lambda transitions: seen.extend(t.state for t in transitions))
    twin.readings("sim-1", {"temperature": 0.0}, T0)
    assert twin.take_dirty() == [("sim-1", twin.state("sim-1"))], "never persisted: due at once"
    twin.readings("sim-1", {"temperature": 0.5}, T0 + S)
    assert twin.take_dirty() == []
    twin.queue(command(), T0 + S)
    assert [device for device, _ in twin.take_dirty()] == ["sim-1"] and seen == ["queued"]
    twin.readings("sim-1", {"temperature": 1.0}, T0 + 2 * S)
    assert (
        twin.take_dirty() == [] and twin.take_dirty(everything=True)[0][1]["reported"]["temperature"] == 1.0
    )
    for e in HAPPY:
        twin.event(e)
    assert twin.command("c1")["state"] == "applied" and seen[-1] == "applied"
    assert twin.wait("c1", "sent", 0.01)["state"] == "applied"
    assert twin.open_commands() == [] and twin.desired_version("sim-1") == 1


def test_readings_the_ingestion_refuses_move_neither_reported_nor_the_boot() -> None:
    """Seen by a new user: another producer's reading with 101 % humidity and its own boot id, which the
    ingestion dead-letters, entered `reported` and passed for a board restart (settings re-sent)."""
    config = parse_config({}, {})
    model = TwinModel(config.model)
    twin = Twin(lambda device: set(model.settings(device)), readings_persist_s=3600)
    stage = TwinStateStage(config, twin, model)
    now = time.time_ns()

    def take(boot: str, time_ns: int, **values: float) -> None:
        envelope = Envelope("sim-1", boot, 0, time_ns, values)
        stage._take(
            SimpleNamespace(
                topic=config.kafka.telemetry_topic, value=encode(envelope), timestamp=now // 10**6
            )
        )

    take("a" * 16, now - 2 * S, temperature=20.0)
    before = sample("twinpipe_twin_state_readings_skipped_total", reason="out_of_range")
    take("b" * 16, now - S, temperature=21.0, humidity=101.0)
    assert sample("twinpipe_twin_state_readings_skipped_total", reason="out_of_range") == before + 1
    take("b" * 16, now // 10**6, temperature=22.0)  # milliseconds: outside the ingestion's window
    state = twin.state("sim-1")
    assert state["reported"] == {"temperature": 20.0} and state["boot"]["id"] == "a" * 16
    take("b" * 16, now, temperature=23.0)
    state = twin.state("sim-1")
    assert state["reported"] == {"temperature": 23.0} and state["boot"]["id"] == "b" * 16
