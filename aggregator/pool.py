"""Worker processes with a per-task time limit that is actually enforced.

`concurrent.futures.ProcessPoolExecutor` cannot cancel a task once it runs, and Python cannot
interrupt a catastrophic regex or a C-level loop with a signal. So each worker here is one
process with its own pipe; a task that overruns its deadline gets its process killed
(SIGKILL) and replaced, and only that task fails with `TimeoutError`.

Start method: 'forkserver'. The daemon runs threads (APScheduler, the asyncio executor), and
`fork` copies whatever locks those threads hold at that instant into the child, where they
can never be released. The fork server is a single-threaded process started once, so forking
from it is safe, and cheaper than 'spawn' when a killed worker has to be replaced.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")

_START_METHOD = "forkserver"


class WorkerDied(RuntimeError):
    """The worker process ended without answering (killed, crashed, out of memory)."""


def _peak_rss() -> int:
    """This process's peak resident set size in bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB


def _worker_main(conn: Connection, max_memory: int | None) -> None:
    """Run tasks from `conn` until it closes or sends None.

    Each reply is (status, value, peak RSS in bytes), so the parent can retire a worker that
    a huge task left bloated: CPython keeps freed memory in its arenas, and a worker that
    once parsed a 100,000-item feed would otherwise hold hundreds of MB until it ends."""
    # Ctrl-C reaches the whole process group; the parent decides what happens to workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if max_memory is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, args = task
        try:
            reply: tuple[str, Any, int] = ("ok", fn(*args), 0)
        except BaseException as exc:  # everything goes back to the caller
            exc.add_note("in worker process:\n" + traceback.format_exc())
            reply = ("error", _portable(exc), 0)
        reply = (reply[0], reply[1], _peak_rss())
        try:
            conn.send(reply)
        except Exception as exc:  # result or exception would not pickle
            failure = RuntimeError(f"worker could not send its reply: {exc!r}")
            conn.send(("error", failure, _peak_rss()))


def _portable(exc: BaseException) -> BaseException:
    """`exc` itself when it survives pickling (every error of `errors` does), else a
    RuntimeError that names it: a foreign exception that cannot cross the pipe still fails
    the task, never the worker."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        portable = RuntimeError(f"{type(exc).__name__}: {exc}")
        for note in getattr(exc, "__notes__", ()):
            portable.add_note(note)
        return portable


class _Worker:
    """One process and the parent's end of its pipe."""

    def __init__(self, context: Any, max_memory: int | None) -> None:
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self.conn = parent_end
        self.process = context.Process(
            target=_worker_main, args=(child_end, max_memory), daemon=True
        )
        self.process.start()
        child_end.close()  # so the parent sees EOF when the child dies

    @property
    def pid(self) -> int | None:
        pid: int | None = self.process.pid
        return pid

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any, int]:
        """Send a task and block for its reply (runs in a helper thread)."""
        self.conn.send((fn, args))
        try:
            return self.conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError) as exc:
            raise WorkerDied(f"worker process {self.pid} ended without answering") from exc

    def stop(self, *, kill: bool) -> None:
        if not kill and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()
        self.process.close()


class WorkerPool:
    """Run picklable functions in `workers` processes, each call with its own time limit.

    Use from one event loop. `run` returns the function's result, re-raises its exception,
    or raises `TimeoutError` after killing and replacing the worker that overran.
    `max_memory` (bytes) caps each worker's address space, so a memory bomb raises
    `MemoryError` in the worker instead of growing the machine's swap. A worker whose peak
    resident memory has passed `recycle_rss` (bytes) is replaced after its task, so one huge
    feed does not leave memory held for the pool's lifetime.
    """

    def __init__(
        self, workers: int, *, max_memory: int | None = None, recycle_rss: int | None = None
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._context = multiprocessing.get_context(_START_METHOD)
        self._max_memory = max_memory
        self._recycle_rss = recycle_rss
        self.recycled = 0  # workers replaced because they grew past recycle_rss
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._size = workers
        self._closed = False
        self._available: asyncio.Semaphore | None = None
        # One blocking send/recv per busy worker; never the loop's shared default executor.
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pool-io")
        for _ in range(workers):
            self._idle.append(_Worker(self._context, max_memory))

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (idle and busy)."""
        with self._lock:
            return [w.pid for w in [*self._idle, *self._busy] if w.pid is not None]

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run `fn(*args)` in a worker; at most `timeout` seconds once a worker has it."""
        if self._closed:
            raise RuntimeError("pool is closed")
        if self._available is None:
            self._available = asyncio.Semaphore(self._size)
        async with self._available:
            with self._lock:
                if self._closed:
                    raise RuntimeError("pool is closed")
                # Workers released by `release_idle` are started again on demand.
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = _Worker(self._context, self._max_memory)
            with self._lock:
                self._busy.add(worker)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._threads, worker.call, fn, args)
            healthy = False
            try:
                status, value, peak = await asyncio.wait_for(future, timeout)
                healthy = self._recycle_rss is None or peak <= self._recycle_rss
                if not healthy:
                    self.recycled += 1
            except TimeoutError:
                raise TimeoutError(
                    f"{getattr(fn, '__name__', fn)!s} overran {timeout:g} s; worker killed"
                ) from None
            finally:
                self._retire_or_reuse(worker, healthy)
            if status == "ok":
                return value  # type: ignore[no-any-return]
            raise value

    def _retire_or_reuse(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            if healthy and not self._closed:
                self._idle.append(worker)
                return
        # Killing the process makes the helper thread's recv() end with EOF.
        worker.stop(kill=True)
        with self._lock:
            if not self._closed:
                self._idle.append(_Worker(self._context, self._max_memory))

    def release_idle(self) -> int:
        """Stop the idle workers and return how many; `run` starts new ones when needed.

        Frees their memory while the parent works alone for a while (a large merge pass)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop(kill=False)
        return len(idle)

    def close(self) -> None:
        """Stop every worker (busy ones are killed); safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
        for worker in idle:
            worker.stop(kill=False)
        for worker in busy:
            worker.process.kill()
        self._threads.shutdown(wait=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __repr__(self) -> str:
        return f"<WorkerPool workers={self._size} pid={os.getpid()} closed={self._closed}>"
