"""The twin's reaction to a board restart (issue 15): a new boot id in its telemetry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from twin_state import lifecycle

NAMES = {"heater", "report_interval_s"}
reported = st.fixed_dictionaries(
    {},
    optional={
        "heater": st.booleans(),
        "report_interval_s": st.floats(0.1, 3600),
        "temperature": st.floats(-40, 85),
    },
)


def state_with(values: dict, boot: str | None, boot_ns: int = 100) -> lifecycle.State:
    state = lifecycle.new_state("sim-1")
    state["reported"] = dict(values)
    if boot is not None:
        state["boot"] = {"id": boot, "time_ns": boot_ns}
    return state


@given(reported, st.integers(101, 10**18))
def test_a_new_boot_forgets_the_settings_and_returns_them_to_send_again(values: dict, time_ns: int) -> None:
    new, lost = lifecycle.board_restart(state_with(values, "a" * 16), "b" * 16, time_ns, NAMES)
    assert lost == {k: v for k, v in values.items() if k in NAMES}
    assert not set(new["reported"]) & NAMES
    assert {k: v for k, v in new["reported"].items()} == {k: v for k, v in values.items() if k not in NAMES}
    assert new["boot"] == {"id": "b" * 16, "time_ns": time_ns}
    again, lost_again = lifecycle.board_restart(new, "b" * 16, time_ns + 1, NAMES)
    assert lost_again == {} and again is new, "the same boot again is no restart"


@given(reported, st.integers(0, 100))
def test_an_old_reading_replayed_from_another_boot_is_no_restart(values: dict, time_ns: int) -> None:
    state = state_with(values, "b" * 16)
    new, lost = lifecycle.board_restart(state, "a" * 16, time_ns, NAMES)
    assert new is state and lost == {}


def test_the_first_boot_seen_is_noted_without_sending_anything() -> None:
    new, lost = lifecycle.board_restart(state_with({"heater": True}, None), "a" * 16, 5, NAMES)
    assert lost == {} and new["reported"] == {"heater": True} and new["boot"]["id"] == "a" * 16


@given(st.sampled_from(lifecycle.STATES), st.booleans())
def test_a_setting_an_unwritten_open_command_brings_is_not_sent_twice(state_name: str, heater: bool) -> None:
    """Seen by a new user: a board replugged while heater=off waited at the publisher got heater=off
    from the waiting command and again from the restart's re-send."""
    state = state_with({"heater": True, "report_interval_s": 5.0}, "a" * 16)
    state["commands"] = [{"id": "c1", "settings": {"heater": heater}, "state": state_name, "history": []}]
    new, resend = lifecycle.board_restart(state, "b" * 16, 10**12, NAMES)
    assert not set(new["reported"]) & NAMES, "the restarted board has none of them"
    waiting = state_name in ("queued", "sent", "delivered")
    assert resend == ({"report_interval_s": 5.0} if waiting else {"heater": True, "report_interval_s": 5.0})
