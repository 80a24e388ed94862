"""Serialization through kombu's registry: JSON by default, msgpack, pickle only when allowed.

Payloads are stored as bytes plus their content type, so a job written with one serializer is
read back with the same one, whatever the reader's ``task_serializer`` is.
"""

from __future__ import annotations

import builtins
import importlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from kombu.exceptions import ContentDisallowed, SerializerNotInstalled
from kombu.serialization import dumps, loads, prepare_accept_content, registry
from kombu.utils import json as kombu_json

from dbqueue.exceptions import DecodeError, EncodeError, ImproperlyConfigured


def accepted_types(accept: Iterable[str]) -> set[str]:
    """Content types allowed by an ``accept_content`` list of names or content types."""
    try:
        return set(prepare_accept_content(list(accept)))
    except (KeyError, SerializerNotInstalled) as exc:
        raise ImproperlyConfigured(f"accept_content names an unknown serializer: {exc}") from None


def content_type_of(serializer: str) -> str:
    """The content type of a serializer name, with a clear error for unknown names."""
    try:
        return str(registry.name_to_type[serializer])
    except KeyError:
        known = ", ".join(sorted(registry.name_to_type))
        raise ImproperlyConfigured(f"unknown serializer {serializer!r} (known: {known})") from None


def check_allowed(serializer: str, accept: set[str]) -> str:
    """Refuse to write with a serializer that readers would refuse (pickle needs opting in)."""
    content_type = content_type_of(serializer)
    if content_type not in accept:
        raise ImproperlyConfigured(
            f"serializer {serializer!r} is not in accept_content; add {serializer!r} to "
            "accept_content to allow it (pickle runs code when loaded: only for trusted producers)"
        )
    return content_type


_JSON = "application/json"
#: kombu's JSON encoding (datetimes, UUIDs, Decimals, bytes) with one encoder object reused.
_json_encoder = kombu_json.JSONEncoder()


def encode(obj: Any, serializer: str) -> tuple[str, bytes]:
    """Serialize ``obj``; returns (content_type, bytes)."""
    if serializer == "json":
        return _JSON, _json_encoder.encode(obj).encode("utf-8")
    content_type, _encoding, data = dumps(obj, serializer=serializer)
    return content_type, data.encode("utf-8") if isinstance(data, str) else bytes(data)


#: kombu's JSON decoding (its ``__type__`` markers for datetimes, UUIDs, ...) with one decoder
#: object reused, instead of a new one per call.
_json_decoder = json.JSONDecoder(object_hook=kombu_json.object_hook)


#: Plain JSON decoding, for payloads with no kombu type marker (most of them).
_plain_json_decoder = json.JSONDecoder()
_TYPE_MARKER = b'"__type__"'


def decode(data: bytes, content_type: str, accept: set[str]) -> Any:
    """Deserialize bytes written by :func:`encode`, refusing content types not in ``accept``."""
    if content_type == _JSON and _JSON in accept:
        decoder = _json_decoder if _TYPE_MARKER in data else _plain_json_decoder
        try:
            return decoder.decode(bytes(data).decode("utf-8"))
        except ValueError as exc:
            raise DecodeError(f"cannot decode {content_type} payload: {exc}") from exc
    try:
        return loads(bytes(data), content_type, "binary", accept=accept)
    except ContentDisallowed as exc:
        raise DecodeError(f"{exc}; add it to accept_content to read it") from None
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} payload: {exc}") from exc


def decode_many(items: Sequence[tuple[bytes, str]], accept: set[str]) -> list[Any]:
    """:func:`decode` of many (data, content_type) pairs; plain JSON ones in one parse.

    A fan-out's replay reads thousands of small results: joining them into one JSON array
    parses them about ten times faster than one by one. Anything else (another content type,
    kombu's type markers, a value that does not parse) is decoded alone, with its own error.
    Only a corrupt row could fool the join: pieces that each fail alone but happen to form
    as many values together (``[1`` and ``2]`` and ``3,4``); dbqueue never writes those.
    """
    values: list[Any] = [None] * len(items)
    plain: list[int] = []
    if _JSON in accept:
        plain = [
            i for i, (data, kind) in enumerate(items) if kind == _JSON and _TYPE_MARKER not in data
        ]
    if plain:
        joined = b"[" + b",".join(items[i][0] for i in plain) + b"]"
        try:
            parsed = _plain_json_decoder.decode(joined.decode("utf-8"))
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and len(parsed) == len(plain):
            for i, value in zip(plain, parsed, strict=True):
                values[i] = value
        else:
            plain = []
    done = set(plain)
    for i, (data, kind) in enumerate(items):
        if i not in done:
            values[i] = decode(data, kind, accept)
    return values


def encode_call(
    task_name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    serializer: str,
    param_names: Sequence[str] = (),
) -> tuple[str, bytes]:
    """Serialize a call's arguments; on failure name the argument that does not serialize."""
    try:
        return encode([list(args), kwargs], serializer)
    except Exception as exc:
        culprit = _find_culprit(args, kwargs, serializer, param_names)
        raise EncodeError(
            f"cannot serialize {culprit} of task {task_name!r} with {serializer}: {exc}"
        ) from exc


def _find_culprit(
    args: Sequence[Any], kwargs: dict[str, Any], serializer: str, names: Sequence[str]
) -> str:
    for index, value in enumerate(args):
        if not _encodes(value, serializer):
            name = f" ({names[index]!r})" if index < len(names) else ""
            return f"positional argument {index}{name} of type {type(value).__name__}"
    for key, value in kwargs.items():
        if not _encodes(value, serializer):
            return f"argument {key!r} of type {type(value).__name__}"
    return "the arguments"


def _encodes(value: Any, serializer: str) -> bool:
    try:
        encode(value, serializer)
    except Exception:
        return False
    return True


def decode_call(data: bytes, content_type: str, accept: set[str]) -> tuple[list[Any], dict]:
    """Read back ``[args, kwargs]`` (a third Celery ``embed`` element is tolerated)."""
    body = decode(data, content_type, accept)
    if not isinstance(body, list | tuple) or len(body) < 2:
        raise DecodeError(f"payload is not [args, kwargs]: {body!r:.200}")
    args, kwargs = body[0], body[1]
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise DecodeError(f"payload is not [args, kwargs]: {body!r:.200}")
    return list(args), kwargs


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """Celery's portable form of an exception: type, module and message arguments."""
    cls = type(exc)
    return {
        "exc_type": cls.__qualname__,
        "exc_module": cls.__module__,
        "exc_message": [_portable(a) for a in exc.args],
    }


def _portable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def exception_from_dict(meta: dict[str, Any]) -> BaseException:
    """Rebuild an exception from :func:`exception_to_dict`; unknown types get a stand-in class."""
    name = str(meta.get("exc_type") or "Exception")
    module = str(meta.get("exc_module") or "builtins")
    message = meta.get("exc_message") or []
    args = message if isinstance(message, list | tuple) else [message]
    cls = _find_exception_class(module, name)
    try:
        return cls(*args)
    except Exception:
        return _stand_in(module, name)(*args)


def _find_exception_class(module: str, name: str) -> type[BaseException]:
    try:
        found: Any = builtins if module == "builtins" else importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
    except Exception:
        pass
    return _stand_in(module, name)


def _stand_in(module: str, name: str) -> type[BaseException]:
    return type(name.rpartition(".")[2], (Exception,), {"__module__": module})
