"""Issue 15: a command to one simulated board moved the other boards' readings (sim-2's
report_interval_s 3600 then 1 gave sim-1 a 1.45 s gap, then two readings in one millisecond)."""

from __future__ import annotations

import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from publisher.sources import SimulatorSource, reschedule
from twinpipe.config.publisher import SimulatorConfig

intervals = st.dictionaries(st.sampled_from(["sim-1", "sim-2", "sim-3"]), st.floats(0.1, 3600), min_size=1)


@given(intervals, st.data(), st.floats(0, 1e6), st.none() | st.floats(0, 1e6))
def test_only_the_board_whose_interval_changed_is_rescheduled(before, data, now, tick) -> None:
    after = {d: data.draw(st.sampled_from([v, 0.5, 3600.0])) for d, v in before.items()}
    due = {d: data.draw(st.floats(0, 1e6)) for d in before}
    new = reschedule(due, before, after, now, tick)
    for device in before:
        if after[device] != before[device]:
            assert new[device] == now + after[device]
        else:
            assert new[device] == (tick if tick is not None else due[device])


def test_commands_to_sim_2_leave_sim_1_on_its_tick() -> None:
    """Real threads and clock, at 10 readings/s so the test is short: sim-2 goes to 3600 s then back
    to 0.1 s; sim-1's readings stay 0.1 s apart throughout."""
    readings: dict[str, list[float]] = {"sim-1": [], "sim-2": []}
    source = SimulatorSource(
        SimulatorConfig(devices=2, rate_hz=10.0),
        lambda d, _v, _ns: readings[d].append(time.monotonic()),
        lambda *_: None,
    )
    stop = threading.Event()
    runner = threading.Thread(target=source.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while len(readings["sim-1"]) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        source.write("sim-2", b"SET c1 report_interval_s 3600\n")
        time.sleep(0.35)  # a few of sim-1's ticks between the two commands, not a synchronisation
        source.write("sim-2", b"SET c2 report_interval_s 0.1\n")
        count = len(readings["sim-1"]) + 8
        while len(readings["sim-1"]) < count and time.monotonic() < deadline + 5:
            time.sleep(0.01)
    finally:
        stop.set()
        runner.join(2)
    gaps = [b - a for a, b in zip(readings["sim-1"], readings["sim-1"][1:], strict=False)]
    assert len(gaps) >= 12 and all(0.05 < gap < 0.15 for gap in gaps), gaps
