"""Worker processes that do not outlive the process that started them.

A ``ProcessPoolExecutor`` worker busy with a long job (a comparison cell, an STL reference, a
reference rollout) keeps running when its parent is SIGKILLed: it is re-parented to PID 1 and
holds its memory (350 MB for a cell) and the ``multiprocessing`` resource tracker until the job
ends. ``exit_with_parent`` makes such a worker exit as soon as its parent is gone.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading

EXIT_CODE = 70
"""Exit status of a worker whose parent died (``EX_SOFTWARE``)."""

_watching = False
_lock = threading.Lock()


def exit_with_parent() -> bool:
    """Exit this process (``os._exit``) as soon as the process that started it dies.

    Call it at the start of a job in a ``multiprocessing`` child (spawn, forkserver or fork
    start method); later calls are free. A daemon thread blocks on the parent's sentinel (a
    pipe that ``multiprocessing`` keeps open in the parent for this purpose), so the check costs
    nothing while the parent lives and needs no polling.

    Returns:
        Whether the process is watched (``False`` in a process that ``multiprocessing`` did not
        start, e.g. the main process or a Ray worker).
    """
    global _watching
    with _lock:
        if _watching:
            return True
        parent = multiprocessing.parent_process()
        if parent is None:
            return False
        sentinel = parent.sentinel

        def watch() -> None:
            multiprocessing.connection.wait([sentinel])
            # The parent is gone: nobody can receive this worker's result. Skip interpreter
            # teardown (atexit handlers, joins of pool threads), which could block forever.
            os._exit(EXIT_CODE)

        threading.Thread(target=watch, name="igb-exit-with-parent", daemon=True).start()
        _watching = True
        return True


__all__ = ["EXIT_CODE", "exit_with_parent"]
