"""JSON-RPC 2.0 framing, pure: parse a request body, build replies and the spec's errors.

https://www.jsonrpc.org/specification: a body that is not JSON is -32700 (id null); a value
that is not a request object is -32600; a batch is an array of requests, answered by an array
of the replies to those that carry an id (notifications get none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_NO_ID = object()  # a notification: the request had no "id" member


class RpcError(Exception):
    """An error reply: code, one-line message and optional data (such as the bad field)."""

    def __init__(self, code: int, message: str, data: Any = None, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id  # the id of the request it answers, when readable

    def as_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(field: str, problem: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {field} {problem}", {"field": field})


@dataclass(frozen=True)
class Request:
    method: str
    params: dict[str, Any] | list[Any]
    id: Any  # _NO_ID for a notification

    @property
    def is_notification(self) -> bool:
        return self.id is _NO_ID


def parse_body(body: bytes) -> tuple[list[Request | RpcError], bool]:
    """The requests in `body` (an RpcError in place of each invalid one) and whether it was a
    batch. Raises RpcError(PARSE_ERROR) when the body is not JSON, and RpcError(INVALID_REQUEST)
    for an empty batch."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from None
    if isinstance(doc, list):
        if not doc:
            raise RpcError(INVALID_REQUEST, "Invalid Request: empty batch")
        return [_request(item) for item in doc], True
    return [_request(doc)], False


def _request(doc: Any) -> Request | RpcError:
    if not isinstance(doc, dict):
        return RpcError(INVALID_REQUEST, f"Invalid Request: a {type(doc).__name__}, not an object")
    request_id = doc.get("id", _NO_ID)
    if request_id is not _NO_ID and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None)
    ):
        return RpcError(INVALID_REQUEST, "Invalid Request: id must be a string, number or null")
    if doc.get("jsonrpc") != "2.0":
        return _with_id(RpcError(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"'), doc)
    method = doc.get("method")
    if not isinstance(method, str):
        return _with_id(RpcError(INVALID_REQUEST, "Invalid Request: method must be a string"), doc)
    params = doc.get("params", {})
    if not isinstance(params, dict | list):
        return _with_id(
            RpcError(INVALID_REQUEST, "Invalid Request: params must be an object or array"), doc
        )
    return Request(method, params, request_id)


def _with_id(error: RpcError, doc: dict[str, Any]) -> RpcError:
    # The spec answers an invalid request with id null unless its id could be read.
    request_id = doc.get("id")
    if not isinstance(request_id, bool) and isinstance(request_id, str | int | float | None):
        error.request_id = request_id
    return error


def error_reply(error: RpcError, request_id: Any = None) -> dict[str, Any]:
    """The reply to a failed request: `request_id` (the request's) else the error's own."""
    rid = error.request_id if request_id is None or request_id is _NO_ID else request_id
    return {"jsonrpc": "2.0", "id": rid, "error": error.as_error()}


def result_reply_bytes(request_id: Any, result_json: bytes) -> bytes:
    """A result reply around an already-serialised result (rendered once, served many times)."""
    head = json.dumps(None if request_id is _NO_ID else request_id).encode()
    return b'{"jsonrpc":"2.0","id":' + head + b',"result":' + result_json + b"}"


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
