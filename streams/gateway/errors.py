"""Every refusal of the gateway is a JSON body with a stable reason code; one exception carries it to the answer."""

from __future__ import annotations

import orjson
from aiohttp import web


class Refused(Exception):
    """The request is refused as a whole: `status`, a stable `reason` code, a human `error`, extra headers."""

    def __init__(self, status: int, reason: str, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {reason}: {error}")
        self.status = status
        self.reason = reason
        self.error = error
        self.headers = headers or {}


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def refusal_response(refused: Refused, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = {**refused.headers, **(extra_headers or {})}
    return json_response({"reason": refused.reason, "error": refused.error}, refused.status, headers)
