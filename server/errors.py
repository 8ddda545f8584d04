"""The one exception tree of Unmask.

Every error a user can cause or meet derives from ``UnmaskError`` and carries the HTTP status
and a stable machine-readable ``code``; one middleware (``server.middlewares``) turns them into
JSON, and the CLI prints ``message`` and exits non-zero.

    UnmaskError (500, internal)
    ├── BadRequest (400, bad_request)
    │   ├── InvalidField (400, invalid_field)
    │   ├── MissingVideo (400, missing_video)
    │   └── FetchRefused (400, url_refused)           server/media/netguard.py
    ├── Unauthorized (401, unauthorized)              server/auth.py
    ├── NotFound (404, not_found)
    ├── Conflict (409, conflict)
    ├── PayloadTooLarge (413, payload_too_large)
    ├── UnsupportedEncoding (415, unsupported_content_encoding)  server/auth_middleware.py
    ├── MediaError (422, media_error)
    │   ├── UnsupportedMedia (415, unsupported_media)
    │   ├── UndecodableMedia (422, undecodable_media)
    │   └── MediaLimitExceeded (422, media_limit_exceeded)
    ├── UnsupportedSite (422, unsupported_site)        server/media/resolve.py
    ├── BadPlaylist (422, bad_playlist)                server/media/hls.py
    ├── RateLimited (429, rate_limited)               server/auth.py
    │   └── TooManyChecks (429, too_many_checks)
    ├── FetchFailed (502, fetch_failed)               server/media/netguard.py
    ├── CheckpointError (500, checkpoint_error)
    ├── ConfigError (500, config_error)
    └── ServiceUnavailable (503, service_unavailable)

Classes marked with a module live beside the code that raises them and subclass these.
"""

from __future__ import annotations

from typing import Any


class UnmaskError(Exception):
    """Root of every Unmask error; ``status`` and ``code`` say how the API reports it."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", ...details}}``."""
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class BadRequest(UnmaskError):
    """The request itself is malformed."""

    status, code = 400, "bad_request"


class InvalidField(BadRequest):
    """A field of the request body or query has a wrong type or value."""

    code = "invalid_field"


class MissingVideo(BadRequest):
    """A check was requested with neither a video upload nor a URL."""

    code = "missing_video"


class NotFound(UnmaskError):
    """The addressed resource does not exist."""

    status, code = 404, "not_found"


class Conflict(UnmaskError):
    """The resource is in a state that does not allow the request."""

    status, code = 409, "conflict"


class PayloadTooLarge(UnmaskError):
    """The request body is larger than the endpoint accepts."""

    status, code = 413, "payload_too_large"


class MediaError(UnmaskError):
    """The media could not be used for a check."""

    status, code = 422, "media_error"


class UnsupportedMedia(MediaError):
    """The container or codec is not on the allow-list."""

    status, code = 415, "unsupported_media"


class UndecodableMedia(MediaError):
    """The bytes claim a supported format but cannot be decoded."""

    code = "undecodable_media"


class MediaLimitExceeded(MediaError):
    """Resolution, duration, frame rate or frame count is beyond a named limit."""

    code = "media_limit_exceeded"


class CheckpointError(UnmaskError):
    """A detector checkpoint is missing, corrupt or its model card is invalid."""

    code = "checkpoint_error"


class ConfigError(UnmaskError):
    """The settings are invalid."""

    code = "config_error"


class ServiceUnavailable(UnmaskError):
    """A dependency (database, broker, model) is not ready."""

    status, code = 503, "service_unavailable"
