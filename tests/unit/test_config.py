"""``dbqueue/config.py`` (and the app's configuration methods): Celery's setting names and
defaults, Celery 3's uppercase names, the config loaders and broker URL precedence."""

from __future__ import annotations

import datetime as dt
import types
from pathlib import Path

import pytest

from dbqueue import DBQueue
from dbqueue.config import BROKER_URL_ENV, DEFAULT_BROKER_URL, DEFAULTS, OLD_NAMES, Settings
from dbqueue.exceptions import ImproperlyConfigured


@pytest.fixture
def bare_app(monkeypatch: pytest.MonkeyPatch) -> DBQueue:
    """An app with no broker argument and no DBQUEUE_BROKER_URL (never opens storage here)."""
    monkeypatch.delenv(BROKER_URL_ENV, raising=False)
    return DBQueue("cfgtest", set_as_current=False)


# --- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("broker_url", None),
        ("result_backend", None),
        ("task_default_queue", "celery"),
        ("task_serializer", "json"),
        ("result_serializer", "json"),
        ("accept_content", ["json"]),
        ("result_accept_content", None),
        ("result_expires", dt.timedelta(days=1)),
        ("timezone", None),
        ("enable_utc", True),
        ("task_always_eager", False),
        ("task_eager_propagates", False),
        ("task_ignore_result", False),
        ("task_time_limit", None),
        ("task_soft_time_limit", None),
        ("task_create_missing_queues", True),
        ("task_routes", None),
        ("worker_pool", "prefork"),
        ("worker_concurrency", None),
        ("worker_max_tasks_per_child", None),
        ("worker_hijack_root_logger", True),
        ("beat_schedule", {}),
    ],
)
def test_defaults_have_celerys_names_and_values(name: str, value: object) -> None:
    conf = Settings()
    assert conf[name] == value
    assert getattr(conf, name) == value


def test_result_expires_default_is_one_day_in_seconds() -> None:
    assert Settings().result_expires_seconds == 86400.0


@pytest.mark.parametrize(
    ("value", "seconds"), [(dt.timedelta(hours=2), 7200.0), (30, 30.0), (None, None), (0, None)]
)
def test_result_expires_seconds_accepts_timedelta_and_numbers(value, seconds) -> None:
    conf = Settings()
    conf.result_expires = value
    assert conf.result_expires_seconds == seconds


def test_mutable_defaults_are_not_shared_between_apps() -> None:
    first, second = Settings(), Settings()
    first.accept_content.append("pickle")
    first.beat_schedule["x"] = {}
    assert second.accept_content == ["json"]
    assert second.beat_schedule == {}
    assert DEFAULTS["accept_content"] == ["json"]


def test_attribute_and_item_access_are_the_same_setting() -> None:
    conf = Settings()
    conf.task_default_queue = "default"
    assert conf["task_default_queue"] == "default"
    conf["worker_concurrency"] = 8
    assert conf.worker_concurrency == 8


def test_unknown_setting_attribute_raises_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_setting"):
        Settings().no_such_setting  # noqa: B018


def test_changes_lists_only_settings_that_differ_from_defaults() -> None:
    conf = Settings({"task_default_queue": "default", "my_own_key": 1})
    conf.task_serializer = "json"  # same as the default: not a change
    assert conf.changes() == {"task_default_queue": "default", "my_own_key": 1}


# --- Celery 3 uppercase names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("BROKER_URL", "broker_url", "sqlite:///old.db"),
        ("CELERY_RESULT_BACKEND", "result_backend", "db+sqlite:///r.db"),
        ("CELERY_TASK_SERIALIZER", "task_serializer", "msgpack"),
        ("CELERY_ACCEPT_CONTENT", "accept_content", ["json", "msgpack"]),
        ("CELERY_DEFAULT_QUEUE", "task_default_queue", "default"),
        ("CELERY_ROUTES", "task_routes", {"a.b": "q"}),
        ("CELERY_TASK_RESULT_EXPIRES", "result_expires", 60),
        ("CELERY_ALWAYS_EAGER", "task_always_eager", True),
        ("CELERY_EAGER_PROPAGATES_EXCEPTIONS", "task_eager_propagates", True),
        ("CELERY_ACKS_LATE", "task_acks_late", False),
        ("CELERY_IMPORTS", "imports", ("proj.tasks",)),
        ("CELERYD_CONCURRENCY", "worker_concurrency", 4),
        ("CELERYD_MAX_TASKS_PER_CHILD", "worker_max_tasks_per_child", 100),
        ("CELERYD_TASK_TIME_LIMIT", "task_time_limit", 30),
        ("CELERYBEAT_SCHEDULE", "beat_schedule", {"every": {"task": "t", "schedule": 5}}),
    ],
)
def test_old_uppercase_names_map_to_new_names(old: str, new: str, value: object) -> None:
    assert OLD_NAMES[old] == new
    for conf in (Settings({old: value}), _set_by_attribute(old, value), _set_by_update(old, value)):
        assert conf[new] == value
        assert old not in conf


def _set_by_attribute(name: str, value: object) -> Settings:
    conf = Settings()
    setattr(conf, name, value)
    return conf


def _set_by_update(name: str, value: object) -> Settings:
    conf = Settings()
    conf.update({name: value})
    return conf


def test_app_keyword_settings_accept_old_names() -> None:
    app = DBQueue("x", set_as_current=False, CELERY_DEFAULT_QUEUE="legacy", CELERYD_CONCURRENCY=3)
    assert app.conf.task_default_queue == "legacy"
    assert app.conf.worker_concurrency == 3


def test_mixing_old_and_new_names_in_one_update_names_both() -> None:
    conf = Settings()
    with pytest.raises(ImproperlyConfigured) as info:
        conf.update({"BROKER_URL": "sqlite:///a.db", "task_default_queue": "q"})
    message = str(info.value)
    assert "BROKER_URL" in message
    assert "task_default_queue" in message
    assert conf.broker_url is None, "a refused update must not apply half of its settings"
    assert conf.task_default_queue == "celery"


def test_mixing_old_and_new_names_in_a_config_object_is_refused(bare_app: DBQueue) -> None:
    class Config:
        broker_url = "sqlite:///a.db"
        CELERY_ROUTES = {"a": "b"}

    with pytest.raises(ImproperlyConfigured, match=r"CELERY_ROUTES.*broker_url"):
        bare_app.config_from_object(Config)


@pytest.mark.parametrize(
    "values",
    [
        {"BROKER_URL": "sqlite:///a.db", "CELERYD_CONCURRENCY": 2},
        {"broker_url": "sqlite:///a.db", "worker_concurrency": 2},
    ],
    ids=["old", "new"],
)
def test_either_style_alone_is_accepted(values: dict) -> None:
    conf = Settings()
    conf.update(values)
    assert (conf.broker_url, conf.worker_concurrency) == ("sqlite:///a.db", 2)


# --- config_from_object / config_from_envvar ----------------------------------------------------

CONFIG_MODULE = """
    broker_url = "sqlite:///from-module.db"
    task_default_queue = "from-module"
    worker_concurrency = 7
    _private = "ignored"
"""


def test_config_from_object_module_path_string(bare_app, write_module, tmp_path: Path) -> None:
    name = write_module(tmp_path, "dbq_unit_celeryconfig", CONFIG_MODULE)
    bare_app.config_from_object(name)
    assert bare_app.conf.broker_url == "sqlite:///from-module.db"
    assert bare_app.conf.task_default_queue == "from-module"
    assert bare_app.conf.worker_concurrency == 7
    assert "_private" not in bare_app.conf


def test_config_from_object_module_attribute_path(bare_app, write_module, tmp_path) -> None:
    name = write_module(
        tmp_path, "dbq_unit_settings", "class Prod:\n    task_default_queue = 'prod'\n"
    )
    bare_app.config_from_object(f"{name}:Prod")
    assert bare_app.conf.task_default_queue == "prod"


def test_config_from_object_module_object(bare_app: DBQueue) -> None:
    module = types.ModuleType("cfg")
    module.BROKER_URL = "sqlite:///mod.db"  # type: ignore[attr-defined]
    module.CELERYD_CONCURRENCY = 3  # type: ignore[attr-defined]
    bare_app.config_from_object(module)
    assert bare_app.conf.broker_url == "sqlite:///mod.db"
    assert bare_app.conf.worker_concurrency == 3


def test_config_from_object_class(bare_app: DBQueue) -> None:
    class Config:
        task_serializer = "msgpack"
        accept_content = ["msgpack"]
        MixedCase = "not a setting"

    bare_app.config_from_object(Config)
    assert bare_app.conf.task_serializer == "msgpack"
    assert bare_app.conf.accept_content == ["msgpack"]
    assert "MixedCase" not in bare_app.conf


def test_config_from_object_dict(bare_app: DBQueue) -> None:
    bare_app.config_from_object({"task_default_queue": "d", "result_expires": 10})
    assert bare_app.conf.task_default_queue == "d"
    assert bare_app.conf.result_expires_seconds == 10.0


def test_config_from_object_django_namespace(bare_app: DBQueue) -> None:
    django_settings = {
        "CELERY_BROKER_URL": "sqlite:///django.db",
        "CELERY_TASK_ROUTES": {"app.tasks.*": {"queue": "app"}},
        "CELERY_TASK_ALWAYS_EAGER": True,
        "DEBUG": True,
        "INSTALLED_APPS": ["app"],
    }
    bare_app.config_from_object(django_settings, namespace="CELERY")
    assert bare_app.conf.broker_url == "sqlite:///django.db"
    assert bare_app.conf.task_routes == {"app.tasks.*": {"queue": "app"}}
    assert bare_app.conf.task_always_eager is True
    assert "DEBUG" not in bare_app.conf and "debug" not in bare_app.conf
    assert "installed_apps" not in bare_app.conf


def test_constructor_namespace_applies_to_config_from_object(monkeypatch) -> None:
    monkeypatch.delenv(BROKER_URL_ENV, raising=False)
    app = DBQueue("x", namespace="CELERY", set_as_current=False)
    app.config_from_object({"CELERY_TASK_DEFAULT_QUEUE": "ns", "task_default_queue": "plain"})
    assert app.conf.task_default_queue == "ns"


def test_config_source_constructor_argument(monkeypatch) -> None:
    monkeypatch.delenv(BROKER_URL_ENV, raising=False)
    app = DBQueue("x", config_source={"task_default_queue": "src"}, set_as_current=False)
    assert app.conf.task_default_queue == "src"


def test_config_from_object_unimportable_module(bare_app: DBQueue) -> None:
    with pytest.raises(ImproperlyConfigured, match="dbq_no_such_module_xyz"):
        bare_app.config_from_object("dbq_no_such_module_xyz")
    bare_app.config_from_object("dbq_no_such_module_xyz", silent=True)
    assert bare_app.conf.task_default_queue == "celery"


def test_config_from_envvar(bare_app, write_module, tmp_path, monkeypatch) -> None:
    name = write_module(tmp_path, "dbq_unit_envconfig", CONFIG_MODULE)
    monkeypatch.setenv("DBQ_UNIT_CONFIG_MODULE", name)
    bare_app.config_from_envvar("DBQ_UNIT_CONFIG_MODULE")
    assert bare_app.conf.task_default_queue == "from-module"


def test_config_from_envvar_unset(bare_app: DBQueue, monkeypatch) -> None:
    monkeypatch.delenv("DBQ_UNIT_UNSET_VAR", raising=False)
    with pytest.raises(ImproperlyConfigured, match="DBQ_UNIT_UNSET_VAR"):
        bare_app.config_from_envvar("DBQ_UNIT_UNSET_VAR")
    bare_app.config_from_envvar("DBQ_UNIT_UNSET_VAR", silent=True)
    assert bare_app.conf.changes() == {}


# --- broker URL precedence ----------------------------------------------------------------------


def test_broker_url_defaults_to_a_sqlite_file(bare_app: DBQueue) -> None:
    assert DEFAULT_BROKER_URL == "sqlite:///dbqueue.db"
    assert bare_app.broker_url() == "sqlite:///dbqueue.db"


def test_broker_url_setting_beats_the_default(bare_app: DBQueue) -> None:
    bare_app.conf.broker_url = "sqlite:///conf.db"
    assert bare_app.broker_url() == "sqlite:///conf.db"


def test_env_beats_the_setting(bare_app: DBQueue, monkeypatch) -> None:
    bare_app.conf.broker_url = "sqlite:///conf.db"
    monkeypatch.setenv(BROKER_URL_ENV, "sqlite:///env.db")
    assert bare_app.broker_url() == "sqlite:///env.db"


def test_empty_env_is_ignored(bare_app: DBQueue, monkeypatch) -> None:
    bare_app.conf.broker_url = "sqlite:///conf.db"
    monkeypatch.setenv(BROKER_URL_ENV, "")
    assert bare_app.broker_url() == "sqlite:///conf.db"


def test_constructor_broker_beats_env_and_setting(monkeypatch) -> None:
    monkeypatch.setenv(BROKER_URL_ENV, "sqlite:///env.db")
    app = DBQueue(
        "x", broker="sqlite:///arg.db", broker_url="sqlite:///conf.db", set_as_current=False
    )
    assert app.broker_url() == "sqlite:///arg.db"


def test_backend_argument_sets_result_backend(monkeypatch) -> None:
    app = DBQueue("x", backend="db+sqlite:///results.db", set_as_current=False)
    assert app.conf.result_backend == "db+sqlite:///results.db"


def test_storage_opens_the_broker_in_effect(sqlite_url: str, monkeypatch) -> None:
    """The env URL is the one actually connected to, not only the one reported."""
    monkeypatch.setenv(BROKER_URL_ENV, sqlite_url)
    app = DBQueue("x", set_as_current=False)
    app.conf.broker_url = "sqlite:///never-used.db"
    try:
        assert app.storage.url.database == sqlite_url.removeprefix("sqlite:///")
    finally:
        app.close()
    assert not Path("never-used.db").exists()


def test_constructor_broker_is_visible_as_the_setting(monkeypatch) -> None:
    monkeypatch.delenv(BROKER_URL_ENV, raising=False)
    app = DBQueue("x", broker="sqlite:///arg.db", set_as_current=False)
    assert app.conf.broker_url == "sqlite:///arg.db"
