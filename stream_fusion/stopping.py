"""Ctrl-C and SIGTERM for the streaming command: every stop ends in a summary and a complete recording.

* during start-up (models loading, sources opening): the start-up is abandoned with one line, exit 130, at the end
  of the step under way (:meth:`StopSignals.check`: raising into a library's import or a model load half-done
  breaks it in ways that end in tracebacks); a second signal abandons the step itself;
* first signal while streaming: a clean stop (queues drained, recording finished, summary printed, exit 0);
* second: hurry (stop waiting for readers and queues, but still cancel the fusion call in flight, finish the
  recording and print the summary, exit 0): a user pressing Ctrl-C twice wants out, not a broken file;
* third: exit 130 at once, with one line, whatever is left unfinished.

Signals land on the main thread between two Python steps, so the handler only sets flags (or raises, during
start-up); the work of stopping happens where it is safe.
"""
from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType
from typing import Protocol

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupted_by(error: BaseException | None) -> Interrupted | None:
    """The :class:`Interrupted` that ``error`` is, or was raised from (a library can wrap it: an import that a
    signal broke ends in ImportError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Interrupted):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class Interrupted(KeyboardInterrupt):
    """A stop signal before the stream ran: raised out of the start-up, reported in one line, exit 130."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class Stoppable(Protocol):
    def stop(self, reason: str = "request") -> None: ...

    def hurry(self) -> None: ...


class StopSignals:
    """Installs the SIGINT / SIGTERM handlers for the life of a ``with`` block (main thread only) and restores the
    previous ones after. :meth:`attach` the pipeline once it is built: signals before that abandon the start-up."""

    def __init__(self) -> None:
        self.received = 0
        self.pipeline: Stoppable | None = None
        self._previous: dict[int, object] = {}
        self._name = ""

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is SystemExit:  # the process is ending: a signal now must still find these handlers, not the defaults
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def attach(self, pipeline: Stoppable) -> None:
        """From now on signals stop ``pipeline``; one that came during the start-up stops it at once."""
        self.check()
        self.pipeline = pipeline

    def check(self) -> None:
        """Between two start-up steps: raise :class:`Interrupted` if a stop signal came."""
        if self.received and self.pipeline is None:
            raise Interrupted(self._name)

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        self._name = signal.Signals(number).name
        name = self._name
        self.received += 1
        if self.pipeline is None:
            if self.received == 2:
                raise Interrupted(name)
            if self.received == 1:
                return
        if self.received == 1:
            self.pipeline.stop(name)
        elif self.received == 2:
            print(f"\n{name} again: finishing the recording and the summary now ({name} once more quits at once, "
                  "leaving them unfinished)", file=sys.stderr, flush=True)
            self.pipeline.hurry()
        else:
            print(f"\nerror: {name} a third time: quit at once; the recording, if any, is unfinished",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(130)  # no interpreter teardown: nothing can hang or abort in it now
