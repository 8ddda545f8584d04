"""The OpenAPI 3.1 description of the HTTP API, written by hand and served at ``/openapi.json``.

tests/server/api/test_openapi.py keeps it honest: every route of the app is described here and
every path here is a route, and live responses validate against these schemas.
"""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from server.analysis.verdict import Label
from server.db.models import CheckStatus

JSON = "application/json"
CHECK_ID_PATTERN = "^[0-9a-f]{32}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _obj(required: list[str], properties: dict[str, Any], *, extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "The request is malformed or a field is invalid.",
        404: "No such resource.",
        409: "The resource is in a state that does not allow the request.",
        413: "The body or an announced size is over a limit.",
        415: "The media type is not supported.",
        422: "The media cannot be used (undecodable, over a limit).",
        502: "The video's server could not be reached or answered with an error.",
        503: "A dependency is not ready.",
    }
    return {str(s): _error(words[s]) for s in statuses}


def _text(media: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


CHECK_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "A check id (32 lowercase hex digits, random).",
    "schema": {"type": "string"},
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["error"],
        {
            "error": _obj(
                ["code", "message"],
                {
                    "code": {"type": "string", "description": "Stable machine-readable code."},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                    "request_id": {"type": "string", "description": "Echoed in the X-Request-Id header."},
                },
            )
        },
        extra=False,
    ),
    "Links": _obj(
        ["self", "events", "report"],
        {
            "self": {"type": "string"},
            "events": {"type": "string"},
            "report": {"type": "string"},
            "frames": {"type": "string"},
        },
    ),
    "Box": {
        "type": "array",
        "description": "A face box in frame pixels: x, y, width, height.",
        "items": {"type": "integer"},
        "minItems": 4,
        "maxItems": 4,
    },
    "TimelinePoint": _obj(
        ["index", "t", "score", "tamper", "purified_score", "boxes"],
        {
            "index": {"type": "integer", "minimum": 0},
            "t": {"type": "number", "minimum": 0, "description": "Seconds from the start."},
            "score": _nullable("number", minimum=0, maximum=1, description="Null: no face."),
            "tamper": _nullable("number"),
            "purified_score": _nullable("number", minimum=0, maximum=1),
            "boxes": {"type": "array", "items": _ref("Box")},
        },
    ),
    "ModelRef": _obj(
        ["id", "version", "demo"],
        {
            "id": {"type": "string"},
            "version": {"type": "string"},
            "architecture": {"type": "string"},
            "demo": {"type": "boolean", "description": "Demo weights: not for real decisions."},
            "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        },
    ),
    "Verdict": _obj(
        [
            "label",
            "score",
            "confidence",
            "reason",
            "frames_analyzed",
            "faces",
            "tamper",
            "timeline",
            "model",
            "cached",
            "keys",
            "timings",
            "created_at",
        ],
        {
            "label": {
                "enum": [
                    Label.AUTHENTIC,
                    Label.MANIPULATED,
                    Label.TAMPERED,
                    Label.INCONCLUSIVE,
                    Label.FAILED,
                ]
            },
            "score": _nullable("number", minimum=0, maximum=1, description="Calibrated P(manipulated)."),
            "confidence": _nullable("number", minimum=0, maximum=1),
            "reason": _nullable("string"),
            "manipulated": {"type": "boolean", "description": "Tampered only: the purified verdict."},
            "frames_analyzed": {"type": "integer", "minimum": 0},
            "faces": _obj(
                ["frames_with_faces", "max_per_frame", "total"],
                {
                    "frames_with_faces": {"type": "integer", "minimum": 0},
                    "max_per_frame": {"type": "integer", "minimum": 0},
                    "total": {"type": "integer", "minimum": 0},
                },
            ),
            "tamper": _obj(
                ["suspicious_frames", "purified_frames", "max_score"],
                {
                    "checked_frames": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Face frames the tamper check ran on (captured frames: "
                        "those with a lossless face patch).",
                    },
                    "suspicious_frames": {"type": "integer", "minimum": 0},
                    "purified_frames": {"type": "integer", "minimum": 0},
                    "max_score": _nullable("number"),
                    "threshold": _nullable("number"),
                },
            ),
            "timeline": {"type": "array", "items": _ref("TimelinePoint")},
            "model": _ref("ModelRef"),
            "media": {"type": "object"},
            "truncated": {"type": "boolean"},
            "cached": {"type": "boolean"},
            "cache": _obj(
                ["check_id", "matched_by"],
                {
                    "check_id": {"type": "string"},
                    "matched_by": {"type": "string"},
                    "matched_frames": {"type": "integer"},
                    "query_frames": {"type": "integer"},
                },
            ),
            "keys": {
                "type": "array",
                "items": _obj(["kind"], {"kind": {"type": "string"}}),
                "description": "The cache keys the verdict is stored under.",
            },
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "check_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    ),
    "Check": _obj(
        ["id", "status", "source", "frames_analyzed", "model", "created_at", "links"],
        {
            "id": {"type": "string"},
            "status": {"enum": list(CheckStatus.ALL)},
            "source": {"type": "string"},
            "filename": _nullable("string"),
            "sha256": _nullable("string"),
            "size_bytes": _nullable("integer"),
            "frames_analyzed": {"type": "integer", "minimum": 0},
            "media": _nullable("object"),
            "model": _obj(["id", "version"], {"id": {"type": "string"}, "version": {"type": "string"}}),
            "created_at": _nullable("string"),
            "finished_at": _nullable("string"),
            "links": _ref("Links"),
            "error": _obj(["code", "message"], {"code": _nullable("string"), "message": _nullable("string")}),
            "verdict": _ref("Verdict"),
        },
    ),
    "CheckAccepted": _obj(
        ["id", "status", "links"],
        {
            "id": {"type": "string"},
            "status": {"enum": list(CheckStatus.ALL)},
            "joined": {"type": "boolean", "description": "True: an identical running check was joined."},
            "verdict": _nullable("object", description="Set when the answer came from cache (200)."),
            "links": _ref("Links"),
        },
    ),
    "SseEvent": _obj(
        ["data"],
        {
            "event": {"enum": ["progress", "frame", "purified", "verdict", "error"]},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": JSON,
                "contentSchema": {"type": "object"},
                "description": "A JSON object: a TimelinePoint for `frame`, a Verdict for `verdict`, …",
            },
        },
    ),
    "CacheHit": _obj(
        ["check_id", "matched_by", "verdict"],
        {"check_id": {"type": "string"}, "matched_by": {"type": "string"}, "verdict": _ref("Verdict")},
    ),
    "ModelCard": _obj(
        ["id", "version", "architecture", "input_size", "threshold", "demo", "weights_sha256"],
        {
            "id": {"type": "string"},
            "version": {"type": "string"},
            "architecture": {"type": "string"},
            "arch_kwargs": {"type": "object"},
            "input_size": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "mean": {"type": "array", "items": {"type": "number"}},
            "std": {"type": "array", "items": {"type": "number"}},
            "labels": {"type": "array", "items": {"type": "string"}},
            "threshold": {"type": "number"},
            "calibration": {"type": "object"},
            "training_data": {"type": "string"},
            "metrics": {"type": "object"},
            "demo": {"type": "boolean"},
            "weights_sha256": {"type": "string"},
            "created_at": {"type": "string"},
            "notes": {"type": "string"},
            "format_version": {"type": "integer"},
        },
    ),
}

UPLOAD_FORM = _obj(
    ["video"],
    {
        "video": {"type": "string", "contentMediaType": "application/octet-stream"},
        "page_url": {"type": "string", "maxLength": 2048},
    },
)

URL_BODY = {
    "oneOf": [
        _obj(
            ["url"],
            {"url": {"type": "string", "maxLength": 2048}, "page_url": {"type": "string", "maxLength": 2048}},
        ),
        _obj(["source"], {"source": {"const": "frames"}, "page_url": {"type": "string", "maxLength": 2048}}),
    ]
}

PATHS: dict[str, Any] = {
    "/v1/checks": {
        "post": {
            "operationId": "createCheck",
            "summary": "Start a check of a video",
            "description": (
                'Send the video as a multipart upload (`video` field), a URL as JSON `{"url": …}`, '
                'or `{"source": "frames"}` to open a check that receives captured frames. '
                "The cache is asked first: a known video gets its verdict at once (200)."
            ),
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": UPLOAD_FORM}, JSON: {"schema": URL_BODY}},
            },
            "responses": {
                "200": _json(_ref("CheckAccepted"), "The verdict came from cache."),
                "202": _json(_ref("CheckAccepted"), "The check started (or joined a running one)."),
                **_errors(400, 413, 415, 422, 502),
            },
        }
    },
    "/v1/checks/{id}": {
        "get": {
            "operationId": "getCheck",
            "summary": "A check's status and, when done, its verdict",
            "parameters": [CHECK_ID_PARAM],
            "responses": {"200": _json(_ref("Check"), "The check."), **_errors(404)},
        }
    },
    "/v1/checks/{id}/events": {
        "get": {
            "operationId": "checkEvents",
            "summary": "Server-Sent Events of a check",
            "description": (
                "Events `progress`, `frame` (one per scored frame), `purified`, `verdict` and `error`, "
                "each `data:` a JSON object; `Last-Event-ID` resumes after an event."
            ),
            "parameters": [
                CHECK_ID_PARAM,
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The event stream; the schema describes each event.",
                    "content": {"text/event-stream": {"schema": _ref("SseEvent")}},
                },
                **_errors(404),
            },
        }
    },
    "/v1/checks/{id}/frames": {
        "post": {
            "operationId": "postFrames",
            "summary": "Frames captured by the extension for a frames check",
            "parameters": [CHECK_ID_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": _obj(
                            ["frame", "t"],
                            {
                                "frame": {"type": "array", "items": {"type": "string"}},
                                "t": {"type": "array", "items": {"type": "number"}},
                                "patch": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "PNG of a region of the frame sent just before it "
                                    "(the faces the server found, grown): only face crops inside one "
                                    "get the tamper check.",
                                },
                                "patch_at": {
                                    "type": "array",
                                    "items": {"type": "string", "pattern": "^[0-9]+,[0-9]+$"},
                                    "description": "x,y of the preceding patch's top-left pixel.",
                                },
                                "final": {"type": "string", "enum": ["0", "1", "true", "false"]},
                            },
                        )
                    }
                },
            },
            "responses": {
                "200": _json(
                    _obj(
                        ["accepted", "frames", "status"],
                        {
                            "accepted": {"type": "integer"},
                            "frames": {"type": "integer"},
                            "status": {"type": "string"},
                            "patches": {
                                "type": "boolean",
                                "description": "Whether this server runs the tamper check, so "
                                "lossless face patches are worth sending.",
                            },
                            "faces": {
                                "type": "array",
                                "description": "Per accepted frame: its face boxes [x, y, w, h] and "
                                "whether the tamper check ran on it.",
                                "items": _obj(
                                    ["t", "boxes", "tamper_checked"],
                                    {
                                        "t": {"type": "number"},
                                        "boxes": {
                                            "type": "array",
                                            "items": {"type": "array", "items": {"type": "integer"}},
                                        },
                                        "tamper_checked": {"type": "boolean"},
                                    },
                                ),
                            },
                        },
                    ),
                    "The frames were scored.",
                ),
                **_errors(400, 404, 409, 413, 415, 422),
            },
        }
    },
    "/v1/verdicts": {
        "get": {
            "operationId": "getVerdict",
            "summary": "Cached verdict by URL or SHA-256 (exactly one)",
            "parameters": [
                {"name": "url", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "sha256",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                },
            ],
            "responses": {"200": _json(_ref("CacheHit"), "A cached verdict."), **_errors(400, 404)},
        }
    },
    "/v1/verdicts/lookup": {
        "post": {
            "operationId": "lookupVerdict",
            "summary": "Cached verdict by URL, SHA-256 or perceptual frame hashes",
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": _obj(
                            [],
                            {
                                "url": {"type": "string"},
                                "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                                "frame_hashes": {
                                    "type": "array",
                                    "maxItems": 256,
                                    "items": {"type": "string", "pattern": "^[0-9a-fA-F]{16}$"},
                                },
                            },
                        )
                    }
                },
            },
            "responses": {"200": _json(_ref("CacheHit"), "A cached verdict."), **_errors(400, 404, 413)},
        }
    },
    "/v1/verdicts/{check_id}": {
        "delete": {
            "operationId": "invalidateVerdict",
            "summary": "Stop serving a check's verdict from cache",
            "parameters": [
                {"name": "check_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": _json(_obj(["removed"], {"removed": {"type": "integer"}}), "Keys removed."),
                **_errors(404),
            },
        }
    },
    "/v1/models": {
        "get": {
            "operationId": "activeModel",
            "summary": "The active detector's model card",
            "responses": {
                "200": _json(_obj(["active"], {"active": _ref("ModelCard")}), "The model card."),
            },
        }
    },
    "/checks/{id}": {
        "get": {
            "operationId": "reportPage",
            "summary": "The human-readable report of a check (HTML, no JavaScript needed)",
            "parameters": [CHECK_ID_PARAM],
            "responses": {
                "200": _text("text/html", "The report page."),
                "404": _text("text/html", "No such check (an HTML page)."),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness: the process answers",
            "responses": {"200": _json(_obj(["status"], {"status": {"const": "ok"}}), "Alive.")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: the database answers and the model is loaded",
            "responses": {
                "200": _json(
                    _obj(
                        ["status"],
                        {
                            "status": {"const": "ready"},
                            "frame_index": {
                                "type": "object",
                                "description": "The in-memory near-duplicate index per model ref "
                                "(look-ups use the database until `ready`).",
                                "additionalProperties": _obj(
                                    ["ready", "rows", "segments"],
                                    {
                                        "ready": {"type": "boolean"},
                                        "rows": {"type": "integer"},
                                        "segments": {"type": "integer"},
                                        "answered": {"type": "integer"},
                                        "disabled": {"type": "string"},
                                    },
                                ),
                            },
                        },
                    ),
                    "Ready.",
                ),
                "503": _json(
                    _obj(
                        ["status", "problems"],
                        {
                            "status": {"const": "unavailable"},
                            "problems": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    ),
                    "Not ready; `problems` names each failing dependency.",
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text format; OpenMetrics when asked for)",
            "responses": {
                "200": {
                    "description": "Every metric of this process.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
        }
    },
    "/docs": {
        "get": {
            "operationId": "docs",
            "summary": "This document as a readable HTML page",
            "responses": {"200": _text("text/html", "The API reference.")},
        }
    },
}


# Operations under /v1 (and /metrics unless made public) take a bearer token; a server that
# listens on loopback only (the embedded default) also accepts anonymous requests.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (`unmask token create`)."},
    "accessToken": {
        "type": "apiKey",
        "in": "query",
        "name": "access_token",
        "description": "The token in the query: the events stream only (EventSource sends no headers).",
    },
}


def _with_common_responses(paths: dict[str, Any]) -> dict[str, Any]:
    """Add what every operation can answer: 500; and on protected ones 401, 429 and security."""
    for path, item in paths.items():
        for method, op in item.items():
            op["responses"].setdefault("500", _error("Unexpected server error."))
            if path.startswith("/v1/") or path == "/metrics":
                op["responses"].setdefault("401", _error("A token is required or the token is not valid."))
                op["responses"].setdefault(
                    "429", _error("Too many requests or running checks; see Retry-After.")
                )
                schemes: list[dict[str, list[str]]] = [{"bearer": []}]
                if path.endswith("/events"):
                    schemes.append({"accessToken": []})
                op["security"] = [*schemes, {}]
            if method == "post":
                op["responses"].setdefault("413", _error("The body is larger than this endpoint accepts."))
                op["responses"].setdefault("415", _error("The content type or encoding is not accepted."))
    return paths


def _version() -> str:
    try:
        return metadata.version("unmask")
    except metadata.PackageNotFoundError:
        return "0"


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document as a JSON-ready dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Unmask",
            "version": _version(),
            "summary": "Deepfake checks for videos, robust to adversarial perturbations.",
            "description": (
                'Every error is JSON `{"error": {"code", "message", "request_id", …}}` with a '
                "stable code; every response carries `X-Request-Id`."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": _with_common_responses(copy.deepcopy(PATHS)),
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }
