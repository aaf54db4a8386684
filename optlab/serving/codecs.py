"""Body formats a service speaks (JSON, msgpack) and the error a service answers bad input with.

A `Codec` turns body bytes into an object and back; `CODECS` is the registry the HTTP app factory
and the deployments read by name. `BadRequest` is a request the service refuses (HTTP 4xx) with a
one-line message that names the problem and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

MAX_BODY_BYTES = 16_384


class BadRequest(ValueError):
    """A request the service refuses (HTTP 4xx): `status` and a one-line message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _json_decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON ({exc}); send one JSON request object", 400) from None


def _msgpack_decode(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise BadRequest(f"body is not valid msgpack ({type(exc).__name__}); send msgpack.packb(request)",
                         400) from None


@dataclass(frozen=True)
class Codec:
    """A body format: its name, HTTP content type, and bytes <-> object functions."""

    name: str
    content_type: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


CODECS: dict[str, Codec] = {
    "json": Codec("json", "application/json", lambda obj: json.dumps(obj).encode(), _json_decode),
    "msgpack": Codec("msgpack", "application/msgpack", msgpack.packb, _msgpack_decode),
}


def codec(name: str) -> Codec:
    """The registered codec `name`, or a one-line error listing the known ones."""
    if name not in CODECS:
        raise ValueError(f"unknown payload format {name!r}; use one of {', '.join(CODECS)}")
    return CODECS[name]
