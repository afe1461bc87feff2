"""The ``[publishers.NAME]`` tables of a config file: publishers routes forward to.

Each table names a publisher by its entry-point name in the ``loafer.publishers`` group
(``rabbit``, ``amqp``, ``sqs``, ``sns``, ``nats`` or a third party's) and gives its
``target`` (routing key, AMQP 1.0 address, queue, topic or subject), ``url`` and
``options``; :func:`loafer_cli.publish.build_publisher` (the one ``loafer publish``
uses) builds it. Before that, the options are checked against what the publisher class
accepts as a provider's are: an option it does not take is refused, listing those it
takes; a required one missing is named; each value is checked against its annotation.

A route's ``publish_to`` names the publishers it may publish to; :func:`targets_of`
turns the names into the ``{name: publisher}`` mapping :class:`~loafer_core.Route`
takes, or says which names are declared. Nothing connects here: the manager opens the
publishers when it starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from loafer_cli._config_provider import _NO_TYPE, accepted_options, check_option
from loafer_cli._config_schema import PublisherConfig
from loafer_cli.publish import _BUNDLED, build_publisher, load_publisher
from loafer_core.errors import ConfigurationError
from loafer_core.settings import SettingError

__all__ = ["PublisherProblem", "publisher_of", "targets_of"]


class PublisherProblem(Exception):
    """A publisher cannot be built; ``key`` is the key in its table (``options.x``)."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def publisher_of(config: PublisherConfig, hidden: frozenset[str] = frozenset()) -> Any:
    """Build the publisher ``config`` declares; raises :class:`PublisherProblem`.

    ``hidden`` are the option names whose values came from the environment (never
    shown; a string there may be converted to the number or boolean wanted).
    """
    name = config.publisher
    try:
        cls = load_publisher(name)
    except ConfigurationError as exc:
        raise PublisherProblem(("publisher",), str(exc)) from None
    target_key, url_key = _BUNDLED.get(name, ("", "url"))
    owner = f"{name!r} ({getattr(cls, '__name__', type(cls).__name__)})"
    options = _checked_options(
        cls, owner, config.options, target_key, url_key, config.url is not None, hidden
    )
    try:
        return build_publisher(name, config.target, config.url, options)
    except SettingError as exc:  # a setting's check refused an option's value
        if exc.field not in options:
            raise PublisherProblem((), str(exc)) from None
        got = "the value of an environment variable (not shown)" if exc.field in hidden else exc.got
        raise PublisherProblem(
            ("options", exc.field), f"expected {exc.expected}, got {got}"
        ) from None
    except ConfigurationError as exc:  # the publishers' own messages mask passwords
        raise PublisherProblem((), str(exc)) from None
    except Exception as exc:
        raise PublisherProblem(
            ("options",), f"{owner} refused its options: {type(exc).__name__}: {exc}"
        ) from None


def _checked_options(
    cls: Any,
    owner: str,
    options: Mapping[str, Any],
    target_key: str,
    url_key: str,
    url_given: bool,
    hidden: frozenset[str],
) -> dict[str, Any]:
    accepted = accepted_options(cls)
    if accepted is None:
        return dict(options)  # nothing to check against: the class decides
    if not target_key:  # a third party's: the target is its first parameter
        target_key = accepted.primary or next(iter(accepted.types), "")
    given = {target_key: "target", url_key: "url"}
    listed = accepted.names(frozenset(given))
    for key in options:
        if key in given:
            raise PublisherProblem(
                ("options", key),
                f"give it as the publisher's {given[key]!r} key, not in options",
            )
        if key not in accepted.types and not accepted.takes_any:
            close = difflib.get_close_matches(key, listed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PublisherProblem(
                ("options", key),
                f"unknown option of {owner}{hint}; it takes: {', '.join(listed) or 'none'}",
            )
    checked: dict[str, Any] = {}
    for key, value in options.items():
        try:
            checked[key] = check_option(value, accepted.types.get(key, _NO_TYPE), key in hidden)
        except ValueError as exc:
            raise PublisherProblem(("options", key), str(exc)) from None
    for parameter_name in sorted(accepted.required):
        if parameter_name in checked or parameter_name == target_key:
            continue  # the schema requires target
        if parameter_name == url_key:
            if url_given:
                continue
            raise PublisherProblem(("url",), f"required by {owner} (its broker's URL)")
        raise PublisherProblem(("options", parameter_name), f"required option of {owner} missing")
    return checked


def targets_of(
    names: Sequence[str], declared: Collection[str], publishers: Mapping[str, Any]
) -> dict[str, Any] | None:
    """``{name: publisher}`` for a route's ``publish_to`` names; ``None`` if one of them
    is declared but could not be built (its own error says why); ``ValueError`` naming
    the declared publishers when one is not declared."""
    targets: dict[str, Any] = {}
    for name in names:
        if name not in declared:
            listed = sorted(declared)
            if not listed:
                raise ValueError(
                    f"no publisher named {name!r}: this file declares none (add a "
                    f"[publishers.{name}] table)"
                )
            close = difflib.get_close_matches(name, listed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"no publisher named {name!r}{hint}; declared: {', '.join(listed)} "
                f"(each a [publishers.NAME] table)"
            )
        if name not in publishers:
            return None
        targets[name] = publishers[name]
    return targets
