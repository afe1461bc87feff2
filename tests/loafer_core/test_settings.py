"""loafer_core.settings: checks at construction, the flat adapter, masking in reprs."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.settings import (
    Connection,
    SettingError,
    Settings,
    Timeouts,
    choice,
    flat_fields,
    flat_names,
    from_flat,
    name,
    optional,
    seconds,
    setting,
    shared_flat,
    whole,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example(Settings):
    primary = "queue"
    flat = {
        **shared_flat("url", "poll_timeout", "close_timeout", "connection_options"),
        "reconnect_interval": "timeouts.reconnect",
    }

    queue: str = setting(check=name)
    connection: Connection = Connection(url="amqp://localhost/")
    timeouts: Timeouts = Timeouts(poll=3.0)
    headroom: int = setting(0, check=whole(0))
    mode: str = setting("a", check=choice("a", "b"))
    token: str | None = setting(None, check=optional(name), secret=True)
    arguments: Mapping[str, Any] = setting(default_factory=dict)


def test_flat_names_are_the_fields_and_the_declared_paths() -> None:
    assert flat_names(Example) == sorted(
        [
            "queue",
            "connection",
            "timeouts",
            "headroom",
            "mode",
            "token",
            "arguments",
            "url",
            "poll_timeout",
            "close_timeout",
            "connection_options",
            "reconnect_interval",
        ]
    )
    path, field = flat_fields(Example)["poll_timeout"]
    assert path == "timeouts.poll"
    assert field.type is float  # a real type: nothing to evaluate


def test_from_flat_keeps_the_class_defaults_of_nested_pieces() -> None:
    settings = from_flat(
        Example, "Owner", {"queue": "q", "url": "amqp://h/", "reconnect_interval": 1}
    )
    assert settings.queue == "q"
    assert settings.connection.url == "amqp://h/"
    assert settings.timeouts.poll == 3.0  # Example's default, not Timeouts'
    assert settings.timeouts.reconnect == 1


def test_a_wrong_flat_value_names_the_flat_keyword_and_the_owner() -> None:
    with pytest.raises(
        SettingError, match=r"^Owner\(poll_timeout=\.\.\.\): expected seconds > 0, got -1$"
    ):
        from_flat(Example, "Owner", {"queue": "q", "poll_timeout": -1})
    with pytest.raises(
        SettingError, match=r"Owner\(headroom=\.\.\.\): expected an int >= 0, got True"
    ):
        from_flat(Example, "Owner", {"queue": "q", "headroom": True})
    with pytest.raises(SettingError, match=r"expected 'a' or 'b', got 'c'"):
        from_flat(Example, "Owner", {"queue": "q", "mode": "c"})


def test_an_unknown_keyword_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigurationError, match=r"pol_timeout.*did you mean 'poll_timeout'"):
        from_flat(Example, "Owner", {"queue": "q", "pol_timeout": 1})
    with pytest.raises(ConfigurationError, match=r"unknown option"):
        from_flat(Example, "Owner", {"queue": "q", "publish_timeout": 1})  # not declared


def test_a_missing_required_field_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"^Owner: required keyword-only: 'queue'"):
        from_flat(Example, "Owner", {})


def test_a_nested_piece_and_its_flat_names_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"'timeouts' given with \['poll_timeout'\]"):
        from_flat(Example, "Owner", {"queue": "q", "timeouts": Timeouts(), "poll_timeout": 1})
    settings = from_flat(Example, "Owner", {"queue": "q", "timeouts": Timeouts(poll=9)})
    assert settings.timeouts.poll == 9


def test_a_secret_is_never_shown() -> None:
    with pytest.raises(SettingError) as caught:
        Example(queue="q", token="")
    assert "not shown" in str(caught.value)
    assert "hunter22" not in repr(Example(queue="q", token="hunter22"))


def test_the_connection_repr_masks_the_url_and_option_values() -> None:
    connection = Connection(
        url="amqp://user:s3cret@host/?keyfile_password=kp", options={"password": "pw"}
    )
    shown = repr(connection)
    assert "s3cret" not in shown and "kp" not in shown and "pw'" not in shown
    assert "user:******@host" in shown
    assert "'password'" in shown  # the option's name, not its value


def test_settings_are_frozen_and_their_mappings_read_only() -> None:
    settings = Example(queue="q", arguments={"x-max-length": 10})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.queue = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.arguments["x"] = 1  # type: ignore[index]
    assert settings.replace(headroom=2).headroom == 2
    with pytest.raises(SettingError):
        settings.replace(headroom=-1)


def test_timeouts_check_each_wait() -> None:
    for field in ("connect", "close", "poll", "publish", "reconnect"):
        with pytest.raises(
            SettingError, match=rf"Timeouts\({field}=\.\.\.\): expected seconds > 0"
        ):
            Timeouts(**{field: 0})
    assert seconds(float("inf")) == "seconds > 0"


def test_shared_flat_refuses_an_unknown_name() -> None:
    with pytest.raises(TypeError, match="unknown"):
        shared_flat("nope")


def _settings_classes(cls: type[Settings]) -> list[type[Settings]]:
    found = [cls]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if isinstance(f.type, type) and issubclass(f.type, Settings):
            found += _settings_classes(f.type)
    return found


def test_every_bundled_settings_field_has_a_real_type() -> None:
    """Config files are checked against field types: none may be a string to evaluate."""
    from loafer_core.plugins import available_providers, load_provider

    classes: list[type[Settings]] = [Connection, Timeouts]
    for info in available_providers():
        try:
            provider = load_provider(info.name)
        except ConfigurationError:  # its broker library is not installed
            continue
        settings_type = getattr(provider, "settings_type", None)
        if settings_type is not None:
            classes += _settings_classes(settings_type)
    for cls in classes:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            assert not isinstance(f.type, str), (cls, f.name)
