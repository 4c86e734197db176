"""`python -m twinpipe command` (issue 15): --wait prints every state the journal passes, and a setting
given twice is refused. The API's answers are scripted (monkeypatched `request`): the follow logic is
what is tested; tests/integration/test_loop.py runs the command against the real stage."""

from __future__ import annotations

import io
from typing import Any

import pytest

from twinpipe import command
from twinpipe.command import CommandError, parse_assignments

FORWARD = ["queued", "sent", "delivered", "written", "acknowledged", "applied"]


def entry(states: list[str]) -> dict[str, Any]:
    history = [
        {"state": s, "time_ns": 1_700_000_000_000_000_000 + i, "by": "x", "detail": ""}
        for i, s in enumerate(states)
    ]
    return {"id": "c1", "state": states[-1], "history": history}


@pytest.mark.parametrize("cuts", [[1, 6], [1, 3, 6], [1, 2, 3, 4, 5, 6], [1, 5, 6]])
def test_wait_prints_every_state_once_however_the_answers_bunch_them(
    monkeypatch: pytest.MonkeyPatch, cuts: list[int]
) -> None:
    answers = [{"command": entry(FORWARD[: cuts[0]])}] + [entry(FORWARD[:n]) for n in cuts[1:]]
    asked: list[str] = []

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(url)
        return answers[len(asked) - 1]

    monkeypatch.setattr(command, "request", request)
    out = io.StringIO()
    assert command.run("http://twin", "t", "sim-2", {"heater": True}, True, None, out=out) == 0
    assert [line.split()[2] for line in out.getvalue().splitlines()] == FORWARD
    assert all(f"after={FORWARD[n - 1]}" in url for n, url in zip(cuts[:-1], asked[1:], strict=True))


def test_a_setting_given_twice_is_refused() -> None:
    with pytest.raises(CommandError, match="heater is given twice"):
        parse_assignments(["heater=on", "heater=off"])
