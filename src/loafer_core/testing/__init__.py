"""Testing tools shipped with loafer-core.

- :class:`ProviderContract`: the conformance suite every provider plugin, ours or a third
  party's, subclasses (see ``docs/writing-a-provider.md``).
- :func:`run_until_idle` and :class:`Report`: for users testing their own handlers on the
  embedded broker, without signals or threads.
- :class:`Capabilities`, re-exported for convenience.

The pytest plugin (:mod:`loafer_core.testing.plugin`) registers the ``memory_broker``
fixture.
"""

from loafer_core.provider import Capabilities, Support
from loafer_core.testing.contract import ProviderContract
from loafer_core.testing.idle import Report, run_until_idle

__all__ = ["Capabilities", "ProviderContract", "Report", "Support", "run_until_idle"]
