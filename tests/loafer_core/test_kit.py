"""The plugin kit: URL rules, the one log filter, map_exceptions, PublishRefused."""

from __future__ import annotations

import logging

import pytest

from loafer_core import kit
from loafer_core.errors import ConfigurationError, ProviderError, PublishRefused

RULES = kit.UrlRules(
    schemes=("demo", "demos"),
    lone_user_is_secret=True,
    mask_query=True,
    secret_query="pass|token",
    secret_options=("password",),
    refuse_fragment=True,
)


def test_mask_url_and_secrets_follow_the_table() -> None:
    assert kit.mask_url("demo://u:pa/ss9@h:1/x?token=t0k9&a=1", RULES) == (
        "demo://u:******@h:1/x?token=******&a=******"
    )
    assert kit.mask_url("demo://t0k9en@h", RULES) == "demo://******@h"
    keep_user = kit.UrlRules(schemes=("demo",))
    assert kit.mask_url("demo://user@h?a=1", keep_user) == "demo://user@h?a=1"
    found = kit.secrets_of("demo://u:p%2Fss9@h?token=t0k9", RULES, {"password": "opt9"})
    assert set(found) == {"p%2Fss9", "p/ss9", "t0k9", "opt9"}
    assert list(found) == sorted(found, key=len, reverse=True)
    assert kit.secrets_of("demo://u:ab@h", RULES) == ()  # too short to replace in text


def test_scrub_masks_urls_in_text_and_known_secrets() -> None:
    text = kit.scrub("failed on demo://u:pw9@h/ with pw9 and p/ss", RULES, ("pw9",))
    assert "pw9" not in text and "demo://u:******@h/" in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h", "expected a demo:// or demos:// URL"),
        ("demo://u:pa#ss9@h", "would not be read as meant"),
        ("demo://u:pa/ss9@h", "would not be read as meant"),
    ],
)
def test_check_url_refuses_without_showing_the_password(url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected) as info:
        kit.check_url("Demo", url, RULES)
    assert "ss9" not in str(info.value)


def test_check_url_hides_the_validator_message() -> None:
    def validate(url: str) -> None:
        raise ValueError(f"bad {url}")

    rules = kit.UrlRules(schemes=("demo",), validate=validate)
    with pytest.raises(ConfigurationError, match="is not a valid URL") as info:
        kit.check_url("Demo", "demo://u:sec9@h", rules)
    assert "sec9" not in str(info.value) and info.value.__cause__ is None
    assert kit.check_url("Demo", "demo://h", kit.UrlRules(schemes=("demo",))) == "demo://h"


def test_mask_text_and_is_clean() -> None:
    rules = kit.TextRules(secret_names=("secret_key",))
    text = "GET http://u:pw@h/ secret_key=abc123 Authorization: Bearer tok9 Signature=" + "a" * 16
    masked = kit.mask_text(text, rules)
    assert all(s not in masked for s in ("pw@", "abc123", "tok9", "a" * 16)), masked
    assert kit.is_clean(ValueError("plain"), rules)
    chained = ValueError("outer")
    chained.__cause__ = OSError("secret_key=abc123")
    assert not kit.is_clean(chained, rules)


def test_the_one_filter_masks_records_of_protected_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # another plugin's text rules (which hide user names too) stay on its own loggers
    kit.protect(["kit_demo_other_library"], text=kit.TextRules())
    kit.protect(["kit_demo_library"], ["s3cret-value"], urls=RULES)
    child = logging.getLogger("kit_demo_library.child")  # created after: not filtered
    installed = kit.secret_filter(RULES)
    assert installed in logging.getLogger("kit_demo_library").filters
    assert installed not in child.filters
    kit.protect(["kit_demo_library"], urls=RULES)  # again: the child too, nothing doubled
    assert child.filters.count(installed) == 1
    assert installed.secrets == ("s3cret-value",)
    assert kit.secret_filter(RULES) is installed is not kit.secret_filter()
    with caplog.at_level(logging.INFO, logger="kit_demo_library"):
        try:
            raise OSError("cannot reach demo://u:pw9x@h with s3cret-value")
        except OSError:
            logging.getLogger("kit_demo_library").exception("at %s", "demo://u:pw9x@h")
    record = caplog.records[-1]
    shown = record.getMessage() + (record.exc_text or "")
    assert "pw9x" not in shown and "s3cret-value" not in shown
    assert "demo://u:******@h" in record.getMessage() and record.exc_info is None


def test_map_exceptions_translates_at_the_edge() -> None:
    translate = kit.map_exceptions(lambda exc: ProviderError(f"reading: {type(exc).__name__}"))
    with pytest.raises(ProviderError, match="reading: KeyError") as info, translate:
        raise KeyError("pw9")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    only_keys = kit.map_exceptions(lambda exc: ProviderError("x"), catch=KeyError)
    with pytest.raises(ValueError), only_keys:  # not in ``catch``: untouched
        raise ValueError("other")
    with kit.map_exceptions(lambda exc: ProviderError("x")):
        pass
    ours = ConfigurationError("already translated")
    with pytest.raises(ConfigurationError) as passed, kit.map_exceptions(ProviderError):
        raise ours
    assert passed.value is ours and not passed.value.__suppress_context__
    chained = kit.map_exceptions(lambda exc: ProviderError("x"), chain=lambda exc: exc)
    with pytest.raises(ProviderError) as linked, chained:
        raise KeyError("clean")
    assert isinstance(linked.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("loafer_amqp.errors", "PublishRefused"),
        ("loafer_nats", "PublishRejected"),
        ("loafer_rabbit", "PublishRejected"),
    ],
)
def test_the_old_publish_refused_names_are_subclasses(module: str, name: str) -> None:
    cls = getattr(pytest.importorskip(module), name)
    assert issubclass(cls, PublishRefused) and issubclass(cls, ProviderError)
