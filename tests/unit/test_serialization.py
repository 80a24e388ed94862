"""``dbqueue/serialization.py``: kombu's serializers, the accept_content gate, errors that name
the argument that does not serialize, and Celery's portable exception form."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import kombu.exceptions
import pytest

from dbqueue import DBQueue
from dbqueue.exceptions import DecodeError, EncodeError, ImproperlyConfigured, TaskNotFound
from dbqueue.serialization import (
    accepted_types,
    check_allowed,
    content_type_of,
    decode,
    decode_call,
    decode_many,
    encode,
    encode_call,
    exception_from_dict,
    exception_to_dict,
)
from tests.unit.helpers import count_jobs

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"

RICH_VALUES = {
    "aware": dt.datetime(2024, 5, 17, 12, 30, 1, 250, tzinfo=dt.UTC),
    "naive": dt.datetime(2024, 5, 17, 12, 30),
    "day": dt.date(2024, 5, 17),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "amount": decimal.Decimal("10.10"),
}


# --- encode / decode ---------------------------------------------------------------------------


def test_json_round_trips_datetimes_uuids_and_decimals() -> None:
    content_type, data = encode(RICH_VALUES, "json")
    assert content_type == JSON
    assert isinstance(data, bytes)
    back = decode(data, content_type, {JSON})
    assert back == RICH_VALUES
    assert type(back["amount"]) is decimal.Decimal and type(back["id"]) is uuid.UUID


def test_call_round_trip_keeps_args_and_kwargs_apart() -> None:
    content_type, data = encode_call(
        "t", (1, RICH_VALUES["id"]), {"when": RICH_VALUES["aware"]}, "json"
    )
    args, kwargs = decode_call(data, content_type, {JSON})
    assert args == [1, RICH_VALUES["id"]]
    assert kwargs == {"when": RICH_VALUES["aware"]}


def test_msgpack_round_trip() -> None:
    content_type, data = encode({"n": [1, 2, 3], "s": "é"}, "msgpack")
    assert content_type == MSGPACK
    assert decode(data, content_type, {MSGPACK}) == {"n": [1, 2, 3], "s": "é"}


def test_decode_refuses_content_not_accepted() -> None:
    content_type, data = encode({"x": 1}, "pickle")
    with pytest.raises(DecodeError, match="accept_content"):
        decode(data, content_type, {JSON})


def test_decode_of_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/json"):
        decode(b"{not json", JSON, {JSON})


@pytest.mark.parametrize("body", [b'{"a": 1}', b"[[1, 2]]", b'[{"a": 1}, {}]', b"[[1], [2]]"])
def test_decode_call_refuses_payloads_that_are_not_args_kwargs(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"not \[args, kwargs\]"):
        decode_call(body, JSON, {JSON})


def test_decode_call_tolerates_celerys_embed_element() -> None:
    body = b'[[1, 2], {"k": 3}, {"callbacks": null, "errbacks": null, "chain": null}]'
    assert decode_call(body, JSON, {JSON}) == ([1, 2], {"k": 3})


def test_accepted_types_takes_names_and_content_types() -> None:
    assert accepted_types(["json", MSGPACK]) == {JSON, MSGPACK}


def test_accepted_types_names_an_unknown_serializer() -> None:
    with pytest.raises(ImproperlyConfigured, match="yaml2"):
        accepted_types(["json", "yaml2"])


def test_unknown_serializer_names_it_and_lists_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        content_type_of("protobuf")
    assert "'protobuf'" in str(info.value)
    assert "json" in str(info.value)


def test_check_allowed_requires_opting_in() -> None:
    assert check_allowed("json", {JSON}) == JSON
    with pytest.raises(ImproperlyConfigured, match="accept_content"):
        check_allowed("pickle", {JSON})
    assert check_allowed("pickle", {JSON, PICKLE}) == PICKLE


# --- through .delay() ---------------------------------------------------------------------------


def _stored(app: DBQueue, result) -> tuple[list, dict, str]:
    job = app.storage.get_job(result.id)
    args, kwargs = decode_call(bytes(job["payload"]), job["content_type"], app.accept)
    return args, kwargs, job["content_type"]


def test_delay_stores_json_that_round_trips_rich_values(app: DBQueue) -> None:
    task = app.task(name="ser.rich")(lambda a, b=None: None)
    args, kwargs, content_type = _stored(app, task.delay(RICH_VALUES["amount"], b=RICH_VALUES))
    assert content_type == JSON
    assert args == [RICH_VALUES["amount"]]
    assert kwargs == {"b": RICH_VALUES}


def test_msgpack_task_serializer_when_accepted(make_app) -> None:
    app = make_app(task_serializer="msgpack", accept_content=["json", "msgpack"])
    task = app.task(name="ser.mp")(lambda a, b: None)
    assert _stored(app, task.delay(1, "two")) == ([1, "two"], {}, MSGPACK)


def test_serializer_per_call_and_per_task(make_app) -> None:
    app = make_app(accept_content=["json", "msgpack"])
    per_task = app.task(name="ser.pertask", serializer="msgpack")(lambda: None)
    per_call = app.task(name="ser.percall")(lambda: None)
    assert _stored(app, per_task.delay())[2] == MSGPACK
    assert _stored(app, per_call.apply_async(serializer="msgpack"))[2] == MSGPACK
    assert _stored(app, per_call.delay())[2] == JSON


def test_pickle_without_accept_content_is_refused_at_delay(make_app) -> None:
    app = make_app(task_serializer="pickle")
    task = app.task(name="ser.pickle")(lambda a: None)
    with pytest.raises(ImproperlyConfigured, match="pickle"):
        task.delay(1)
    assert count_jobs(app) == 0


def test_msgpack_without_accept_content_is_refused_at_delay(make_app) -> None:
    app = make_app(task_serializer="msgpack")
    task = app.task(name="ser.mp2")(lambda a: None)
    with pytest.raises(ImproperlyConfigured, match="msgpack"):
        task.delay(1)
    assert count_jobs(app) == 0


def test_pickle_works_once_accepted(make_app) -> None:
    app = make_app(task_serializer="pickle", accept_content=["json", "pickle"])
    task = app.task(name="ser.pickle2")(lambda a: None)
    value = {1, 2, frozenset({3})}  # not representable in JSON
    assert _stored(app, task.delay(value)) == ([value], {}, PICKLE)


def test_unserializable_positional_argument_names_parameter_and_task(app: DBQueue) -> None:
    def add(x, y):
        return x + y

    task = app.task(name="ser.add")(add)
    with pytest.raises(EncodeError) as info:
        task.delay(1, object())
    message = str(info.value)
    assert "'y'" in message
    assert "'ser.add'" in message
    assert "object" in message
    assert isinstance(info.value, kombu.exceptions.EncodeError)
    assert count_jobs(app) == 0


def test_unserializable_keyword_argument_is_named(app: DBQueue) -> None:
    task = app.task(name="ser.kw")(lambda x, y=None: None)
    with pytest.raises(EncodeError, match=r"'y'.*'ser\.kw'"):
        task.delay(1, y={1, 2})
    assert count_jobs(app) == 0


def test_unserializable_argument_in_delay_many_inserts_nothing(app: DBQueue) -> None:
    task = app.task(name="ser.many")(lambda x: None)
    with pytest.raises(EncodeError, match="'x'"):
        task.delay_many([(1,), (2,), (object(),)])
    assert count_jobs(app) == 0


def test_unserializable_send_task_argument_names_position(app: DBQueue) -> None:
    with pytest.raises(EncodeError, match=r"positional argument 1 .*'remote\.task'"):
        app.send_task("remote.task", args=[1, object()])
    assert count_jobs(app) == 0


# --- exceptions --------------------------------------------------------------------------------


def test_exception_dict_has_celerys_keys() -> None:
    meta = exception_to_dict(ValueError("bad value", 3))
    assert meta == {
        "exc_type": "ValueError",
        "exc_module": "builtins",
        "exc_message": ["bad value", 3],
    }


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad", 1),
        KeyError("k"),
        TaskNotFound("no job"),
        kombu.exceptions.DecodeError("x"),
    ],
)
def test_known_exceptions_round_trip(exc: BaseException) -> None:
    back = exception_from_dict(exception_to_dict(exc))
    assert type(back) is type(exc)
    assert back.args == exc.args


def test_unknown_exception_type_becomes_a_stand_in_with_its_name() -> None:
    back = exception_from_dict(
        {"exc_type": "PaymentDeclined", "exc_module": "billing.errors", "exc_message": ["card"]}
    )
    assert type(back).__name__ == "PaymentDeclined"
    assert type(back).__module__ == "billing.errors"
    assert isinstance(back, Exception)
    assert back.args == ("card",)


def test_message_given_as_a_string_is_one_argument() -> None:
    meta = {"exc_type": "TaskNotFound", "exc_module": "dbqueue.exceptions", "exc_message": "m"}
    assert type(exception_from_dict(meta)) is TaskNotFound
    assert exception_from_dict(meta).args == ("m",)


def test_exception_whose_constructor_needs_other_arguments_still_rebuilds() -> None:
    class NeedsTwo(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}/{b}")

    meta = exception_to_dict(NeedsTwo(1, 2))
    meta["exc_module"] = __name__
    back = exception_from_dict(meta)
    assert type(back).__name__ == "NeedsTwo"
    assert back.args == ("1/2",)


def test_non_portable_exception_arguments_are_stored_as_repr() -> None:
    meta = exception_to_dict(ValueError({1, 2}, b"raw"))
    assert meta["exc_message"] == [repr({1, 2}), repr(b"raw")]


def test_decode_many_matches_decode_item_by_item() -> None:
    accept = {"application/json", "application/x-msgpack"}
    values = [1, "two", None, [3, {"four": 4}], dt.datetime(2026, 1, 2, 3, 4, 5), {"a": []}]
    items = [encode(value, "json") for value in values]
    items.insert(2, encode({"packed": True}, "msgpack"))
    decoded = decode_many([(data, kind) for kind, data in items], accept)
    assert decoded == [decode(data, kind, accept) for kind, data in items]
    assert decoded[5] == dt.datetime(2026, 1, 2, 3, 4, 5)  # kombu's type marker kept


def test_decode_many_falls_back_to_one_by_one_and_names_the_bad_value() -> None:
    accept = {"application/json"}
    good = (b"[1]", "application/json")
    # Pieces that would parse only when joined must not: each is decoded alone, and fails.
    with pytest.raises(DecodeError, match="cannot decode application/json"):
        decode_many([good, (b"[2", "application/json"), (b"3]", "application/json")], accept)
    with pytest.raises(DecodeError, match="accept_content"):
        decode_many([good, (b"\x81\xa1a\x01", "application/x-msgpack")], accept)
