"""pool.WorkerPool: results, exceptions, enforced time limits, and clean shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import psutil
import pytest

from aggregator.errors import ParseError
from aggregator.pool import WorkerDied, WorkerPool


# Task functions live at module level so they pickle by reference.
def add(a: int, b: int) -> int:
    return a + b


def raise_parse_error(url: str) -> None:
    raise ParseError(url, "not a feed")


def raise_value_error() -> None:
    raise ValueError("bad value")


def catastrophic_regex() -> object:
    # Exponential backtracking: Python cannot interrupt this with a signal handler.
    return re.match(r"(a+)+$", "a" * 64 + "b")


def sleep_then_return(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def worker_pid() -> int:
    return os.getpid()


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def die() -> None:
    os._exit(3)


def test_run_returns_the_functions_result() -> None:
    async def main() -> list[int]:
        with WorkerPool(2) as pool:
            return list(await asyncio.gather(*(pool.run(add, i, i, timeout=10) for i in range(8))))

    assert asyncio.run(main()) == [i + i for i in range(8)]


def test_task_runs_in_another_process() -> None:
    async def main() -> int:
        with WorkerPool(1) as pool:
            return await pool.run(worker_pid, timeout=10)

    assert asyncio.run(main()) != os.getpid()


def test_exceptions_are_re_raised_with_their_class_and_fields() -> None:
    async def main() -> None:
        with WorkerPool(1) as pool:
            with pytest.raises(ParseError) as raised:
                await pool.run(raise_parse_error, "http://feed.example/", timeout=10)
            assert raised.value.url == "http://feed.example/"
            assert raised.value.message == "not a feed"
            with pytest.raises(ValueError, match="bad value") as plain:
                await pool.run(raise_value_error, timeout=10)
            assert any("in worker process" in note for note in plain.value.__notes__)
            # The worker that raised is still in service.
            assert await pool.run(add, 1, 2, timeout=10) == 3

    asyncio.run(main())


def test_overrunning_task_is_killed_and_replaced_while_others_finish() -> None:
    async def main() -> None:
        with WorkerPool(2) as pool:
            before = set(pool.pids)
            stuck = pool.run(catastrophic_regex, timeout=0.5)
            others = [pool.run(sleep_then_return, 0.05, i, timeout=10) for i in range(6)]
            results = await asyncio.gather(stuck, *others, return_exceptions=True)
            assert isinstance(results[0], TimeoutError)
            assert results[1:] == list(range(6))
            after = set(pool.pids)
            assert len(after) == 2 and after != before
            killed = before - after
            assert len(killed) == 1 and not psutil.pid_exists(killed.pop())
            assert await pool.run(add, 2, 3, timeout=10) == 5

    asyncio.run(main())


def test_worker_that_dies_is_reported_and_replaced() -> None:
    async def main() -> None:
        with WorkerPool(1) as pool:
            with pytest.raises(WorkerDied):
                await pool.run(die, timeout=10)
            assert await pool.run(add, 1, 1, timeout=10) == 2

    asyncio.run(main())


def test_memory_cap_turns_a_memory_bomb_into_memory_error() -> None:
    async def main() -> None:
        with WorkerPool(1, max_memory=512 * 1024 * 1024) as pool:
            with pytest.raises(MemoryError):
                await pool.run(allocate, 1024, timeout=30)
            assert await pool.run(allocate, 8, timeout=30) == 8 * 1024 * 1024

    asyncio.run(main())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to count descriptors")
def test_close_leaves_no_processes_or_descriptors_behind() -> None:
    async def cycle() -> list[int]:
        async with WorkerPool(2) as pool:
            await pool.run(add, 1, 1, timeout=10)
            try:
                await pool.run(catastrophic_regex, timeout=0.3)
            except TimeoutError:
                pass
            return pool.pids

    asyncio.run(cycle())  # warm up: starts the fork server once per test process
    fds_before = _open_fds()
    pids = asyncio.run(cycle())
    assert _open_fds() == fds_before
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_closed_pool_refuses_work_and_close_is_idempotent() -> None:
    pool = WorkerPool(1)
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(pool.run(add, 1, 2, timeout=1))


def test_worker_bloated_by_a_big_task_is_replaced_and_small_tasks_keep_their_worker() -> None:
    async def main() -> tuple[int, int, int, int, int]:
        with WorkerPool(1, recycle_rss=128 << 20) as pool:
            first = await pool.run(worker_pid, timeout=10)
            same = await pool.run(worker_pid, timeout=10)
            assert await pool.run(allocate, 200, timeout=30) == 200 << 20  # result still delivered
            fresh = await pool.run(worker_pid, timeout=10)
            return first, same, fresh, pool.recycled, len(pool.pids)

    first, same, fresh, recycled, workers = asyncio.run(main())
    assert first == same
    assert fresh != first
    assert recycled == 1 and workers == 1


def test_released_idle_workers_end_and_the_next_task_starts_a_fresh_one() -> None:
    async def go() -> tuple[list[int], int, list[int], int, int]:
        with WorkerPool(2) as pool:
            first = await pool.run(worker_pid, timeout=30)
            before = pool.pids
            released = pool.release_idle()
            after_release = pool.pids
            again = await pool.run(worker_pid, timeout=30)
            return before, released, after_release, first, again

    before, released, after_release, first, again = asyncio.run(go())
    assert released == 2 and len(before) == 2 and first in before
    assert after_release == []
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in before
    )
    assert again not in before
