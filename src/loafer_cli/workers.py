"""``loafer run --workers N``: a parent process supervising N worker processes.

Each worker is the same command (``loafer run ...`` without ``--workers``), started in its
own session with ``LOAFER_WORKER=<index>`` (0 to N-1) in its environment; each runs every
route on its own event loop, and the broker shares the messages between them. One process
per core is how a Python consumer uses a multi-core host.

The parent (:func:`supervise`):

* forwards SIGINT/SIGTERM to every worker (which drains, as ``Manager.run`` does on a
  signal); a second signal is forwarded too (workers stop now). It waits for every worker,
  for at most ``shutdown_timeout + kill_margin`` seconds, then SIGKILLs the stragglers;
* restarts a worker that exits on its own (a crash, a signal from elsewhere, even code 0),
  after a backoff that doubles with each quick death (with jitter, capped) and is reset
  once a worker has lived ``backoff.stable_after`` seconds;
* gives up (stops the others gracefully, exit code 1) when one worker died more than
  ``max_restarts`` times within ``restart_window`` seconds;
* stops every worker and exits 78 (``EX_CONFIG``) as soon as a worker exits 78: its
  configuration is wrong, and restarting it would fail the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["EX_CONFIG", "RestartBackoff", "supervise"]

logger = logging.getLogger("loafer_cli.workers")

EX_CONFIG = 78
"""A worker's exit code for "my configuration is wrong" (``sysexits.h``): never restarted."""

EXIT_GAVE_UP = 1
"""The parent's exit code when workers kept dying, or did not all stop cleanly."""

_KILL_WAIT = 10.0  # seconds to wait for SIGKILLed workers to be reaped before giving up


@dataclass(frozen=True)
class RestartBackoff:
    """How long to wait before restarting a worker that died.

    The n-th consecutive quick death waits ``min(maximum, initial * factor ** (n - 1))``
    seconds, less up to ``jitter`` of it (so workers that died together do not all
    restart at the same instant). A worker that lived ``stable_after`` seconds or more
    before dying starts again from ``initial``.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2
    stable_after: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise ValueError(f"RestartBackoff: need 0 <= initial <= maximum, got {self}")
        if self.factor < 1:
            raise ValueError(f"RestartBackoff(factor=...): expected >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RestartBackoff(jitter=...): expected 0..1, got {self.jitter}")
        if self.stable_after < 0:
            raise ValueError(f"RestartBackoff(stable_after=...): expected >= 0, got {self}")

    def delay(self, consecutive: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the restart following the ``consecutive``-th quick death."""
        exponent = max(consecutive - 1, 0)
        try:
            base = min(self.maximum, self.initial * self.factor**exponent)
        except OverflowError:
            base = self.maximum
        spread = (rng or random).uniform(0.0, self.jitter)
        return base * (1.0 - spread)


@dataclass
class _Slot:
    """One worker position (index), across its restarts."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    consecutive: int = 0  # quick deaths in a row
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    restarts: int = 0
    final: str = ""  # how it ended, for the summary
    clean: bool = False  # stopped as asked (exit 0, or by the forwarded signal)


class _Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        env: Mapping[str, str],
        backoff: RestartBackoff,
        max_restarts: int,
        restart_window: float,
        shutdown_timeout: float,
        kill_margin: float,
    ) -> None:
        self.command = list(command)
        self.env = env
        self.backoff = backoff
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.shutdown_timeout = shutdown_timeout
        self.kill_margin = kill_margin
        self.slots = [_Slot(i) for i in range(workers)]
        self.stopping = asyncio.Event()
        self.stop_signal = signal.SIGTERM
        self.exit_code: int | None = None  # set by a fatal event (EX_CONFIG, gave up)
        self.signals = 0
        self.killed_stragglers = False
        self.watchdog: asyncio.Task[None] | None = None

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        logger.info("starting %d workers (%s ...)", len(self.slots), self.command[0])
        tasks = [
            asyncio.create_task(self._keep(slot), name=f"loafer:worker-{slot.index}")
            for slot in self.slots
        ]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:  # the watchdog gave up on reaping: see _watch
            self.exit_code = self.exit_code or EXIT_GAVE_UP
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if self.watchdog is not None:
                self.watchdog.cancel()
        return self._summary()

    def _summary(self) -> int:
        restarts = sum(slot.restarts for slot in self.slots)
        if self.exit_code is None:
            self.exit_code = 0 if all(slot.clean for slot in self.slots) else EXIT_GAVE_UP
        outcome = ", ".join(f"worker {slot.index}: {slot.final}" for slot in self.slots)
        level = logging.INFO if self.exit_code == 0 else logging.ERROR
        logger.log(
            level,
            "supervisor exiting with code %d (%d workers, %d restarts; %s)",
            self.exit_code,
            len(self.slots),
            restarts,
            outcome,
        )
        return self.exit_code

    # -- one worker slot --------------------------------------------------------------

    async def _keep(self, slot: _Slot) -> None:
        """Run the worker of ``slot``, restarting it as the rules say, until stopping."""
        while not self.stopping.is_set():
            process = await self._start(slot)
            if process is None:
                return
            code = await process.wait()
            if self.stopping.is_set() or code == EX_CONFIG:
                self._ended(slot, process.pid, code)
                return
            if not self._died(slot, process.pid, code):
                return
            delay = self.backoff.delay(slot.consecutive)
            logger.warning(
                "worker %d: restarting in %.2fs (death %d in the last %.0fs; %d allowed)",
                slot.index,
                delay,
                len(slot.deaths),
                self.restart_window,
                self.max_restarts,
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except TimeoutError:
                slot.restarts += 1
        slot.final = slot.final or "stopped"
        slot.clean = True

    async def _start(self, slot: _Slot) -> asyncio.subprocess.Process | None:
        env = {**self.env, "LOAFER_WORKER": str(slot.index)}
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            logger.critical("worker %d: cannot start %r: %s", slot.index, self.command[0], exc)
            slot.final = "could not start"
            self._fatal(EX_CONFIG)
            return None
        slot.process = process
        slot.started_at = time.monotonic()
        logger.info("worker %d started (pid %d)", slot.index, process.pid)
        if self.stopping.is_set():  # a signal came while it was starting
            self._send(slot, self.stop_signal)
        return process

    def _ended(self, slot: _Slot, pid: int, code: int) -> None:
        """The worker of ``slot`` ended while stopping, or with EX_CONFIG: not restarted."""
        slot.process = None
        slot.final = _describe(code)
        if code == EX_CONFIG:
            logger.critical(
                "worker %d (pid %d) exited with code %d (EX_CONFIG: its configuration is "
                "wrong): stopping every worker, not restarting",
                slot.index,
                pid,
                code,
            )
            self._fatal(EX_CONFIG)
            return
        slot.clean = code == 0 or (code < 0 and -code in (signal.SIGTERM, signal.SIGINT))
        log = logger.info if slot.clean else logger.error
        log("worker %d (pid %d) stopped: %s", slot.index, pid, slot.final)

    def _died(self, slot: _Slot, pid: int, code: int) -> bool:
        """Account for an unexpected exit; False if the supervisor gives up."""
        slot.process = None
        now = time.monotonic()
        lived = now - slot.started_at
        slot.consecutive = 1 if lived >= self.backoff.stable_after else slot.consecutive + 1
        slot.deaths.append(now)
        while slot.deaths and slot.deaths[0] < now - self.restart_window:
            slot.deaths.popleft()
        logger.error(
            "worker %d (pid %d) died unexpectedly after %.1fs: %s",
            slot.index,
            pid,
            lived,
            _describe(code),
        )
        if len(slot.deaths) > self.max_restarts:
            slot.final = f"gave up after {len(slot.deaths)} deaths"
            logger.critical(
                "worker %d died %d times within %.0fs (more than max_restarts=%d): "
                "giving up, stopping the other workers",
                slot.index,
                len(slot.deaths),
                self.restart_window,
                self.max_restarts,
            )
            self._fatal(EXIT_GAVE_UP)
            return False
        return True

    # -- stopping -----------------------------------------------------------------------

    def _fatal(self, code: int) -> None:
        if self.exit_code is None or code == EX_CONFIG:
            self.exit_code = code
        self._stop(signal.SIGTERM)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signals += 1
        if self.stopping.is_set():
            logger.warning(
                "%s received again: forwarding it to %s (they stop now)", sig.name, self._live()
            )
            self._forward(sig)
        else:
            logger.info(
                "%s received: forwarding it to %s (they drain for up to %ss; signal again "
                "to stop them now)",
                sig.name,
                self._live(),
                self.shutdown_timeout,
            )
            self._stop(sig)

    def _stop(self, sig: signal.Signals) -> None:
        if self.stopping.is_set():
            return
        self.stop_signal = sig
        self.stopping.set()
        self._forward(sig)
        self.watchdog = asyncio.create_task(self._watch(), name="loafer:workers-watchdog")

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            self._send(slot, sig)

    def _send(self, slot: _Slot, sig: signal.Signals) -> None:
        if slot.process is not None and slot.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it just ended: wait() says how
                slot.process.send_signal(sig)

    def _live(self) -> str:
        pids = [
            str(slot.process.pid)
            for slot in self.slots
            if slot.process is not None and slot.process.returncode is None
        ]
        return f"{len(pids)} workers (pids {', '.join(pids) or 'none'})"

    async def _watch(self) -> None:
        """SIGKILL the workers still running ``shutdown_timeout + kill_margin`` seconds
        after the stop began; give up on reaping them ``_KILL_WAIT`` seconds later."""
        await asyncio.sleep(self.shutdown_timeout + self.kill_margin)
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                logger.error(
                    "worker %d (pid %d) still running %.0fs after the stop began: SIGKILL",
                    slot.index,
                    slot.process.pid,
                    self.shutdown_timeout + self.kill_margin,
                )
                self._send(slot, signal.SIGKILL)
        await asyncio.sleep(_KILL_WAIT)
        logger.critical("workers not reaped %.0fs after SIGKILL: giving up on them", _KILL_WAIT)
        for task in asyncio.all_tasks():
            if task.get_name().startswith("loafer:worker-"):
                task.cancel()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def supervise(
    command: Sequence[str],
    workers: int,
    *,
    env: Mapping[str, str] | None = None,
    backoff: RestartBackoff | None = None,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    shutdown_timeout: float = 30.0,
    kill_margin: float = 10.0,
) -> int:
    """Run ``workers`` copies of ``command`` until SIGINT/SIGTERM; return the exit code.

    Blocks (runs its own event loop; call it from the main thread, with no loop running).
    Each worker runs ``command`` in its own session (so a terminal's Ctrl-C reaches only
    the parent, which forwards it), with ``env`` (default: this process's environment)
    plus ``LOAFER_WORKER=<index>``.

    Args:
        command: the worker's argv (``loafer run ...`` without ``--workers``).
        workers: how many worker processes (>= 1).
        env: the workers' environment, ``os.environ`` if None.
        backoff: the delays between a worker's death and its restart.
        max_restarts: a worker dying more than this many times within ``restart_window``
            seconds makes the parent stop the others and return 1.
        shutdown_timeout: the workers' own drain time (their ``Manager``'s).
        kill_margin: extra seconds before still-running workers are SIGKILLed.

    Returns:
        0 when a signal stopped every worker and each drained cleanly (exit 0, or ended by
        the forwarded signal); 78 when a worker exited 78 (``EX_CONFIG``); 1 when a worker
        kept dying, or some worker did not stop cleanly (SIGKILLed, non-zero exit).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"supervise(workers=...): expected an int >= 1, got {workers!r}")
    if not command:
        raise ValueError("supervise(command=...): expected a non-empty argv")
    if max_restarts < 0 or restart_window <= 0 or shutdown_timeout < 0 or kill_margin < 0:
        raise ValueError(
            "supervise(): max_restarts, shutdown_timeout and kill_margin must be >= 0, "
            "restart_window > 0"
        )
    supervisor = _Supervisor(
        command,
        workers,
        dict(os.environ if env is None else env),
        backoff or RestartBackoff(),
        max_restarts,
        restart_window,
        shutdown_timeout,
        kill_margin,
    )
    return asyncio.run(supervisor.run())
