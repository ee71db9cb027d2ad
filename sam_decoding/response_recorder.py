"""Recording finished responses off an engine's critical path.

:meth:`ResponseCache.record <sam_decoding.ResponseCache.record>` builds automata (milliseconds for a
long response) and :meth:`~sam_decoding.ResponseCache.save` writes the whole cache: neither belongs
inside an engine step. A :class:`ResponseRecorder` takes finished responses through a bounded queue
(:meth:`~ResponseRecorder.submit` never blocks; a response that finds the queue full is dropped
and counted), records them on one background thread, hands every new snapshot to a callback (so
the drafter drafts from it at its next step), and saves the file every ``save_every_responses``
responses or ``save_every_seconds`` seconds, whichever comes first, and at :meth:`~ResponseRecorder.close`
(also run at interpreter exit), so a shutdown loses nothing that was submitted.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from sam_decoding.response_cache import ResponseCache

#: Responses waiting to be recorded, at most; more are dropped (the engine never waits).
QUEUE_SIZE = 1024
#: The cache file is saved after this many recorded responses ...
SAVE_EVERY_RESPONSES = 64
#: ... or this many seconds after the first response recorded since the last save.
SAVE_EVERY_SECONDS = 30.0

_log = logging.getLogger(__name__)
_STOP = object()


class ResponseRecorder:
    """Records responses into ``cache`` on a background thread.

    Args:
        cache: The response cache (thread-safe; its snapshots are immutable).
        on_snapshot: Called on the recorder's thread with the cache's new snapshot after each
            record (e.g. to hand it to a drafter); exceptions are logged, not raised.
        queue_size: Responses that may wait; :meth:`submit` drops beyond it.
        save_every_responses, save_every_seconds: When the file (if the cache has one) is saved.
    """

    def __init__(
        self,
        cache: ResponseCache,
        on_snapshot: Callable[[Any], None] | None = None,
        *,
        queue_size: int = QUEUE_SIZE,
        save_every_responses: int = SAVE_EVERY_RESPONSES,
        save_every_seconds: float = SAVE_EVERY_SECONDS,
    ) -> None:
        self.cache = cache
        self.on_snapshot = on_snapshot
        self.save_every_responses = save_every_responses
        self.save_every_seconds = save_every_seconds
        self.recorded = 0
        self.dropped = 0
        self.saves = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._unsaved = 0
        self._first_unsaved = 0.0
        self._closed = False
        self._close_lock = threading.Lock()
        # The thread and the exit hook hold the recorder weakly, so a discarded recorder is
        # collected (and closed by __del__); at exit, before daemon threads stop, it drains and saves.
        reference = weakref.ref(self)
        self._thread = threading.Thread(target=_run, args=(reference, self._queue), name="sam-decoding-response-recorder", daemon=True)
        self._thread.start()
        self._atexit = lambda: (lambda recorder: recorder.close() if recorder is not None else None)(reference())
        atexit.register(self._atexit)

    def submit(self, tokens: np.ndarray) -> bool:
        """Queue one finished response (token ids; the array is kept, not copied: pass one nobody
        changes). Returns ``False`` if it was dropped (queue full, or the recorder closed)."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(tokens)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def flush(self) -> None:
        """Wait until every response submitted so far is recorded (not necessarily saved)."""
        self._queue.join()

    def close(self) -> None:
        """Record what is queued, save the file if anything changed, and stop the thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        atexit.unregister(self._atexit)
        self._save(final=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown: nothing left to report to
            pass

    def _record(self, tokens: np.ndarray) -> None:
        try:
            self.cache.record(tokens)
        except (TypeError, ValueError) as error:
            _log.warning("response not recorded: %s", error)
            return
        self.recorded += 1
        if not self._unsaved:
            self._first_unsaved = time.monotonic()
        self._unsaved += 1
        if self.on_snapshot is not None:
            try:
                self.on_snapshot(self.cache.snapshot())
            except Exception:  # noqa: BLE001 - a callback's failure must not stop recording
                _log.exception("handing the response cache's snapshot to the drafter failed")
        if self._unsaved >= self.save_every_responses or time.monotonic() - self._first_unsaved >= self.save_every_seconds:
            self._save(final=False)

    def _save(self, final: bool) -> None:
        if self.cache.path is None or not self._unsaved:
            return
        try:
            self.cache.save()
        except OSError as error:
            _log.warning("response cache not saved to %s: %s", self.cache.path, error)
            return
        self._unsaved = 0
        self.saves += 1


def _run(reference: weakref.ref[ResponseRecorder], waiting: queue.Queue[Any]) -> None:
    """The recorder thread: record queued responses until told to stop or the recorder is gone."""
    while True:
        item = waiting.get()
        try:
            if item is _STOP:
                return
            recorder = reference()
            if recorder is None:
                return
            recorder._record(item)
            del recorder
        finally:
            waiting.task_done()
