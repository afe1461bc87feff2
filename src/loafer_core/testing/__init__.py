"""Testing tools shipped with loafer-core.

- :class:`ProviderContract`: the conformance suite every provider plugin, ours or a third
  party's, subclasses (see ``docs/writing-a-provider.md``).
- :class:`DeadLetterContract`: the same for a provider's dead-letter store (``loafer dlq``).
- :class:`PublisherContract`: the same for a publisher (what every ``publish`` promises).
- :func:`run_until_idle` and :class:`Report`: for users testing their own handlers on the
  embedded broker, without signals or threads.
- :func:`eventually`: await a condition nothing signals (a broker's state), bounded, failing
  with what was last seen.
- :class:`Capabilities`, re-exported for convenience.

The pytest plugin (:mod:`loafer_core.testing.plugin`) registers the ``memory_broker``
fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loafer_core.provider import Capabilities, Support
from loafer_core.testing._eventually import eventually
from loafer_core.testing.idle import Report, run_until_idle

if TYPE_CHECKING:
    from loafer_core.testing.contract import ProviderContract
    from loafer_core.testing.deadletters import DeadLetterContract
    from loafer_core.testing.publisher_contract import Arrived, PublisherContract

__all__ = [
    "Arrived",
    "Capabilities",
    "DeadLetterContract",
    "ProviderContract",
    "PublisherContract",
    "Report",
    "Support",
    "eventually",
    "run_until_idle",
]


def __getattr__(name: str) -> Any:
    # The conformance kit is a pytest suite: imported on first use, so run_until_idle
    # works where pytest is not installed.
    if name == "ProviderContract":
        from loafer_core.testing.contract import ProviderContract

        return ProviderContract
    if name == "DeadLetterContract":
        from loafer_core.testing.deadletters import DeadLetterContract

        return DeadLetterContract
    if name in ("PublisherContract", "Arrived"):
        from loafer_core.testing import publisher_contract

        return getattr(publisher_contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
