"""CORS for the hub: Starlette's middleware, with refusals in the one error envelope."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from server.errors import error_response


class EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, answering a refused preflight in the error envelope.

    Starlette answers a disallowed origin, method or header with a bare text/plain 400.
    """

    def preflight_response(self, request_headers) -> Response:
        """Return the preflight answer; a refusal becomes 400 VALIDATION_ERROR in the envelope."""
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = error_response(400, "VALIDATION_ERROR", response.body.decode() or "CORS preflight refused")
        return Response(refused.body, 400, media_type="application/json", headers={
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")})
