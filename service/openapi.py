"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Written by hand (Starlette has no models to derive it from) and kept honest by tests/test_api_schema.py, which
fuzzes the running app from this document with schemathesis and checks every answer against it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _errors(*codes: int) -> dict[str, Any]:
    described = {
        400: "the request's parameters are not valid",
        401: "a missing or wrong admin token (or a missing CSRF header with a dashboard session)",
        404: "no such thing",
        409: "nothing to replay",
        429: "too many failed logins or wrong tokens from this client in the last minute",
        413: "the body is larger than this endpoint accepts (64 KiB)",
        503: "the admin token is not configured, or the database is unavailable",
    }
    return {str(code): {"description": described[code], "content": _JSON_ERROR} for code in codes}


_EVENT_SUMMARY = {
    "type": "object",
    "required": ["id", "notification_id", "type", "status", "attempts", "notified_at", "received_at"],
    "properties": {
        "id": {"type": "integer"},
        "notification_id": {"type": "string"},
        "type": {"type": "string"},
        "grant_id": {"type": ["string", "null"]},
        "object_id": {"type": ["string", "null"]},
        "status": {"type": "string"},
        "attempts": {"type": "integer"},
        "last_error": {"type": ["string", "null"]},
        "notified_at": {"type": "string"},
        "received_at": {"type": "string"},
        "processed_at": {"type": ["string", "null"]},
    },
}
_EVENT_ID = {
    "name": "event_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 9223372036854775807},
}
# PostgreSQL text cannot hold U+0000, so parameters that reach a query may not either (a 400 says so).
_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
_PAUSE = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"scope": {"const": "all"}},
            "required": ["scope"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"scope": {"const": "grant"}, "target": {**_TEXT, "minLength": 1}},
            "required": ["scope", "target"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"scope": {"const": "stage"}, "target": {"enum": ["process", "classify", "act"]}},
            "required": ["scope", "target"],
            "additionalProperties": False,
        },
    ]
}
_ID = {"type": "integer", "minimum": 1, "maximum": 9223372036854775807}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "mailroom",
        "version": "1",
        "description": "Nylas webhooks in, stored, classified and acted-upon email out. Admin routes need "
        "`Authorization: Bearer <MAILROOM_ADMIN_TOKEN>`.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": _ERROR, "EventSummary": _EVENT_SUMMARY},
    },
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers (checks no dependency)",
                "responses": {"200": {"description": "alive"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: PostgreSQL and Redis answer",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/queue": {
            "get": {
                "summary": "Queue depth and live workers (what autoscalers read)",
                "responses": {"200": {"description": "depth"}, "503": {"description": "Redis unavailable"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics, summed over every process",
                "responses": {
                    "200": {"description": "text exposition format"},
                    "503": {"description": "Redis unavailable"},
                },
            }
        },
        "/webhooks/nylas": {
            "post": {
                "summary": "A Nylas v3 notification, signed with HMAC-SHA256 of the raw body",
                "parameters": [
                    {"name": "x-nylas-signature", "in": "header", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": {"description": "stored (queued, received, duplicate or ignored)"},
                    "400": {"description": "not JSON, or not a v3 notification", "content": _JSON_ERROR},
                    "401": {"description": "the signature does not match", "content": _JSON_ERROR},
                    "413": {"description": "the body is over the limit", "content": _JSON_ERROR},
                    "415": {"description": "an encoding other than identity or gzip", "content": _JSON_ERROR},
                    "503": {"description": "not configured, or PostgreSQL unavailable", "content": _JSON_ERROR},
                },
            },
            "get": {
                "summary": "Nylas's challenge: echoes `challenge` as text",
                "parameters": [
                    {
                        "name": "challenge",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._~+/=:-]{1,512}$"},
                    }
                ],
                "responses": {"200": {"description": "the challenge, bare"}, **_errors(400)},
            },
        },
        "/jobs/{job_id}": {
            "get": {
                "summary": "An arq job's status and result",
                "security": _AUTH,
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the job"},
                    "404": {"description": "no such job"},
                    **_errors(401, 429, 503),
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Stored notifications, newest first, paged by `before`",
                "security": _AUTH,
                "parameters": [
                    {"name": "status", "in": "query", "schema": _TEXT},
                    {"name": "type", "in": "query", "schema": _TEXT},
                    {"name": "grant", "in": "query", "schema": _TEXT},
                    {"name": "q", "in": "query", "schema": _TEXT},
                    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {
                        "name": "before",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 9223372036854775807},
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                "responses": {
                    "200": {
                        "description": "a page of events",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["items", "next_before"],
                                    "properties": {
                                        "items": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/EventSummary"},
                                        },
                                        "next_before": {"type": ["integer", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    **_errors(400, 401, 429, 503),
                },
            }
        },
        "/events/{event_id}": {
            "get": {
                "summary": "One event with its email (masked unless `reveal`), timeline and actions",
                "security": _AUTH,
                "parameters": [_EVENT_ID, {"name": "reveal", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "the event"}, **_errors(400, 401, 404, 429, 503)},
            }
        },
        "/events/{event_id}/replay": {
            "post": {
                "summary": "Replay the event's dead stage (`force` re-runs done stages)",
                "security": _AUTH,
                "parameters": [_EVENT_ID, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "what was replayed"}, **_errors(400, 401, 404, 409, 429, 503)},
            }
        },
        "/replay": {
            "post": {
                "summary": "Replay dead letters by filter; counts only unless `dry_run` is false",
                "security": _AUTH,
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "stage": {"enum": ["process", "classify", "act"]},
                                    "grant": _TEXT,
                                    "since": {"type": "string", "format": "date-time"},
                                    "until": {"type": "string", "format": "date-time"},
                                    "error": _TEXT,
                                    "events": {"type": "array", "items": _ID},
                                    "emails": {"type": "array", "items": _ID},
                                    "force": {"type": "boolean"},
                                    "all": {"type": "boolean"},
                                    "dry_run": {"type": "boolean"},
                                },
                            }
                        }
                    }
                },
                "responses": {"200": {"description": "counts"}, **_errors(400, 401, 413, 429, 503)},
            }
        },
        "/erase": {
            "post": {
                "summary": "Erase a grant's mail content (ids and counts stay); counts only unless dry_run is false",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"grant": {**_TEXT, "minLength": 1}, "dry_run": {"type": "boolean"}},
                                "required": ["grant"],
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "counts"}, **_errors(400, 401, 413, 429, 503)},
            }
        },
        "/pause": {
            "post": {
                "summary": "Pause everything, a grant or a stage; every worker holds it within seconds",
                "security": _AUTH,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _PAUSE}}},
                "responses": {"200": {"description": "paused (or was already)"}, **_errors(400, 401, 413, 429, 503)},
            }
        },
        "/resume": {
            "post": {
                "summary": "End a pause; what waited is queued again",
                "security": _AUTH,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _PAUSE}}},
                "responses": {
                    "200": {"description": "resumed, with how many were queued again"},
                    **_errors(400, 401, 409, 413, 429, 503),
                },
            }
        },
        "/rate": {
            "post": {
                "summary": "Change one grant's Nylas call rate at runtime (null: the default)",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "grant": {**_TEXT, "minLength": 1},
                                    "rate": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000},
                                },
                                "required": ["grant", "rate"],
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "the rate now"}, **_errors(400, 401, 413, 429, 503)},
            }
        },
        "/jobs": {
            "get": {
                "summary": "Jobs running, waiting (ready, scheduled) and recently finished, a page at a time",
                "security": _AUTH,
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"enum": ["all", "running", "ready", "scheduled", "waiting", "finished"]},
                    },
                    {"name": "function", "in": "query", "schema": _TEXT},
                    {"name": "grant", "in": "query", "schema": _TEXT},
                    {"name": "error", "in": "query", "schema": _TEXT},
                    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100000}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                "responses": {"200": {"description": "jobs"}, **_errors(400, 401, 429, 503)},
            }
        },
        "/jobs/cancel": {
            "post": {
                "summary": "Cancel every waiting job that matches; dry_run (the default) only counts",
                "security": _AUTH,
                "requestBody": {
                    "required": False,  # empty: a dry run over every waiting job
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "state": {"enum": ["ready", "scheduled", "waiting"]},
                                    "function": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"},
                                    "grant": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"},
                                    "error": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"},
                                    "since": {"type": ["string", "null"], "format": "date-time"},
                                    "until": {"type": ["string", "null"], "format": "date-time"},
                                    "dry_run": {"type": "boolean"},
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "matched (and cancelled)"}, **_errors(400, 401, 413, 429, 503)},
            }
        },
        "/api/history": {
            "get": {
                "summary": "The dashboard's history: queue depth and rates sampled by the APIs, one list per series",
                "security": _AUTH,
                "parameters": [
                    {"name": "minutes", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1440}}
                ],
                "responses": {"200": {"description": "the series"}, **_errors(400, 401, 429, 503)},
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or deferred job; what it stood for is marked so no sweep brings it back",
                "security": _AUTH,
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": _TEXT}],
                "responses": {"200": {"description": "cancelled"}, **_errors(401, 409, 429, 503)},
            }
        },
        "/audit": {
            "get": {
                "summary": "The audit trail, newest first",
                "security": _AUTH,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "action", "in": "query", "schema": _TEXT},
                ],
                "responses": {"200": {"description": "entries"}, **_errors(400, 401, 429, 503)},
            }
        },
        "/api/overview": {
            "get": {
                "summary": "What the dashboard polls: depth, workers, cron, dead letters, pauses, rates, audit",
                "security": _AUTH,
                "parameters": [{"name": "reveal", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "the overview"}, **_errors(400, 401, 429, 503)},
            }
        },
    },
}


async def openapi(request: Request) -> Response:
    return JSONResponse(SPEC)
