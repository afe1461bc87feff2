"""How long a call may wait on the network: timeouts sized to the long poll.

botocore's defaults (60 s to connect, 60 s to read, then up to 4 retries) mean a dead
endpoint (one that accepts connections and never answers) is noticed only minutes
later. The provider sets the read timeout from ``WaitTimeSeconds`` instead (a long
poll answers within that time, plus a margin) and a connect timeout of a few seconds;
an ``AioConfig`` given as ``config=`` still overrides either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig

__all__ = ["CONNECT_TIMEOUT", "READ_MARGIN", "Timeouts"]

#: Seconds to open a connection (botocore's default: 60).
CONNECT_TIMEOUT = 3.0
#: Seconds a response may take beyond the long poll's ``WaitTimeSeconds``.
READ_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """A client's connect and read timeouts (seconds)."""

    connect: float
    read: float

    @classmethod
    def for_wait(cls, wait_time: float) -> Timeouts:
        """The timeouts for a client that long-polls ``wait_time`` seconds."""
        return cls(CONNECT_TIMEOUT, wait_time + READ_MARGIN)

    @classmethod
    def of(cls, config: Any) -> Timeouts:
        """The timeouts in force in a botocore ``config`` (a client's ``meta.config``)."""
        return cls(float(config.connect_timeout), float(config.read_timeout))

    @property
    def attempt(self) -> float:
        """The longest one attempt of a call can take on a silent endpoint."""
        return self.connect + self.read

    def config(self) -> AioConfig:
        """These timeouts as a config to merge under the user's own."""
        return AioConfig(connect_timeout=self.connect, read_timeout=self.read)
