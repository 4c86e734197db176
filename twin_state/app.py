"""The HTTP API: read a thing's state, set desired settings (a command), list and follow commands.
FastAPI publishes its OpenAPI description at /openapi.json and a browsable one at /docs.

Handlers are plain `def`s: FastAPI runs them in its thread pool, so a request waiting for Kafka or
long-polling a command never holds up another.
"""

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from twin_state import metrics
from twin_state.lifecycle import STATES, new_state
from twin_state.stage import TwinStateStage, Unavailable
from twinpipe.command_messages import CommandError
from twinpipe.model import TwinModel
from twinpipe.names import device_problem

MAX_EXPIRY_S = 7 * 86400


class DesiredRequest(BaseModel):
    """Settings to set on the device, and how long the command may take to reach it."""

    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] = Field(
        min_length=1,
        description="setting name → value: true/false for kind bool, a number (in the setting's unit) for "
        "kind number, one of the values for kind enum (the model's settings of the thing)",
        examples=[{"heater": True, "report_interval_s": 2}],
    )
    expires_in_s: float | None = Field(
        None,
        gt=0,
        le=MAX_EXPIRY_S,
        description="seconds the command may take to be acknowledged by the board before it is expired "
        "(default twin_state.command_expiry_s)",
    )


def create_app(stage: TwinStateStage, model: TwinModel, token: str | None) -> FastAPI:
    """`token` None: read-only (writes answer 403)."""
    settings = stage.settings
    twin = stage.twin
    app = FastAPI(
        title="twinpipe twin state API",
        description="Desired and reported state of each device (the words of AWS IoT's device shadow), "
        "commands that set desired settings, and their journal: queued → sent → delivered → written → "
        "acknowledged → applied, or expired / failed. Writes need `Authorization: Bearer <token>`.",
        version="1",
    )
    bearer = HTTPBearer(auto_error=False, description="twin_state.token (or token_file)")

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.REQUESTS.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            raise HTTPException(403, "this twin_state stage is read-only (twin_state.read_only: true)")
        if credentials is None:
            raise HTTPException(
                401, "writes need Authorization: Bearer <twin_state.token>", {"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(403, "wrong bearer token")

    def device_state(device: str) -> dict[str, Any]:
        state = twin.state(device)
        if state is None:
            if model.thing(device) is None:
                raise HTTPException(404, f"no device {device!r}: it is in no thing of the model")
            state = new_state(device)
        return state

    @app.get("/things/{device}/state", summary="The device's desired, reported and delta, versions, commands")
    def get_state(device: str) -> dict[str, Any]:
        return device_state(device)

    @app.patch(
        "/things/{device}/desired",
        status_code=202,
        summary="Set desired settings: validated against the model, sent as a command",
        responses={
            401: {"description": "no bearer token"},
            403: {"description": "wrong token, or read-only"},
            404: {"description": "the device has no settable settings"},
            422: {
                "description": "a setting unknown, of the wrong kind or out of range, named with the reason"
            },
            503: {"description": "Kafka did not take the command"},
        },
    )
    def set_desired(device: str, body: DesiredRequest, _: Annotated[None, Depends(writer)]) -> dict[str, Any]:
        problem = device_problem(device, allow_probe=False)
        if problem:
            raise HTTPException(422, f"device {device!r}: {problem}")
        if not model.settings(device):
            raise HTTPException(
                404, f"device {device!r} has no settings in the model (model.things.*.settings)"
            )
        problems = model.settings_problems(device, body.settings)
        if problems:
            raise HTTPException(
                422,
                [
                    {"loc": ["body", "settings", name], "msg": reason, "type": "value_error"}
                    for name, reason in problems.items()
                ],
            )
        expires_in_s = body.expires_in_s or settings.command_expiry_s
        try:
            entry = stage.accept(device, body.settings, expires_in_s)
        except CommandError as exc:  # a value the model allows but a serial line cannot carry
            raise HTTPException(422, str(exc)) from None
        except Unavailable as exc:
            raise HTTPException(503, f"the command was not taken: {exc}") from None
        return {"id": entry["id"], "command": entry}

    @app.get("/things/{device}/commands", summary="The device's command journal, oldest first")
    def list_commands(device: str) -> dict[str, Any]:
        state = device_state(device)
        return {"device": device, "commands": state["commands"]}

    @app.get("/commands/{command_id}", summary="One command; with wait_s, wait until it leaves state `after`")
    def get_command(
        command_id: str,
        wait_s: Annotated[float, Query(ge=0, le=settings.max_wait_s)] = 0,
        after: Annotated[str | None, Query(description="a lifecycle state; return once it differs")] = None,
    ) -> dict[str, Any]:
        if after is not None and after not in STATES:
            raise HTTPException(422, f"after: {after!r} is not one of {list(STATES)}")
        entry = twin.wait(command_id, after if wait_s > 0 else None, wait_s)
        if entry is None:
            raise HTTPException(404, f"no command {command_id!r} (unknown, or pruned from the journal)")
        return entry

    return app
