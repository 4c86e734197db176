"""The web layer: FastAPI routes under /v1.1 that hand the path and query to `api.Api`, and errors as JSON.

Handlers are plain `def`s: FastAPI runs them in its thread pool, so the blocking InfluxDB queries of
one request never hold up another.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sensorthings_api import metrics
from sensorthings_api.api import Api
from sensorthings_api.ids import VERSION_PATH, BadRequest, NotFound
from sensorthings_api.store import StoreUnavailable

log = logging.getLogger("twinpipe.sensorthings")


def error(status: int, message: str) -> JSONResponse:
    """Errors as FROST and other SensorThings servers send them: {"code", "type": "error", "message"}."""
    return JSONResponse({"code": status, "type": "error", "message": message}, status_code=status)


def create_app(api: Api) -> FastAPI:
    app = FastAPI(
        title="twinpipe SensorThings API",
        description="Read-only OGC SensorThings API 1.1 over the twin's model and InfluxDB",
        version="1.1",
    )

    def answer(request: Request, path: str) -> JSONResponse:
        started = time.perf_counter()
        resource = metrics.resource_of(path)
        base = (api.config.base_url or str(request.base_url)).rstrip("/") + VERSION_PATH
        response: JSONResponse
        try:
            body: dict[str, Any] = api.get(path, dict(request.query_params), base)
            response = JSONResponse(body)
        except BadRequest as exc:
            response = error(400, str(exc))
        except NotFound as exc:
            response = error(404, str(exc))
        except StoreUnavailable as exc:
            metrics.INFLUX_ERRORS.inc()
            log.warning("GET %s: %s", request.url.path, exc)
            response = error(503, f"InfluxDB: {exc}")
        except Exception:
            log.exception("GET %s failed", request.url)
            response = error(500, "internal error (logged by the sensorthings_api stage)")
        status = str(response.status_code)
        metrics.REQUESTS.labels(resource, status if status in metrics.STATUSES else "500").inc()
        metrics.DURATION.labels(resource).observe(time.perf_counter() - started)
        return response

    @app.get(VERSION_PATH)
    def service_root(request: Request) -> JSONResponse:
        return answer(request, "")

    @app.get(VERSION_PATH + "/{path:path}")
    def resource(request: Request, path: str) -> JSONResponse:
        return answer(request, path)

    return app
