"""The fast way's thread hop (``api/fast_routes.Hop``): what ``run_in_threadpool`` gives a
call -- one of anyio's default limiter's tokens, the caller's context, its result or its error, the
call seen through to its end when the caller is cancelled -- on threads of its own, which end idle."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import anyio.to_thread
import pytest

from orchestrator.server.api.fast_routes import Hop

WHO = contextvars.ContextVar("who", default="nobody")


def test_a_call_holds_a_token_sees_the_callers_context_and_gives_its_result_or_error() -> None:
    hop = Hop()

    async def main() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        WHO.set("the request")

        def seen() -> tuple[str, int, str]:
            return WHO.get(), limiter.borrowed_tokens, threading.current_thread().name

        assert await hop.run(seen) == ("the request", 1, "fast-route")

        def fails(text: str) -> None:
            raise ValueError(text)

        with pytest.raises(ValueError, match="refused"):
            await hop.run(fails, "refused")
        assert (limiter.borrowed_tokens, hop.calls, hop.threads) == (0, 2, 1)  # one thread, used twice

    asyncio.run(main())


def test_with_every_token_taken_a_call_waits_in_anyios_line() -> None:
    hop = Hop()

    async def main() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = 1
        holding, release = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with limiter:
                holding.set()
                await release.wait()

        held = asyncio.create_task(holder())
        await holding.wait()
        ran = threading.Event()
        call = asyncio.create_task(hop.run(lambda: (ran.set(), threading.current_thread().name)[1]))
        await asyncio.sleep(0.05)  # a chance to run, which it must not take
        assert not ran.is_set() and not call.done()
        release.set()
        name = await call
        await held
        assert name != "fast-route" and hop.calls == 0 and limiter.borrowed_tokens == 0

    asyncio.run(main())


def test_a_cancelled_call_ends_before_the_cancellation_goes_on() -> None:
    hop = Hop()

    async def main() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        started, go_on = threading.Event(), threading.Event()

        def slow() -> str:
            started.set()
            go_on.wait(30)
            return "done"

        call = asyncio.create_task(hop.run(slow))
        await asyncio.to_thread(started.wait, 30)
        call.cancel()
        await asyncio.sleep(0.05)  # the cancellation delivered; the call still runs
        assert not call.done() and limiter.borrowed_tokens == 1
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert limiter.borrowed_tokens == 0

    asyncio.run(main())


def test_an_idle_thread_ends_and_the_next_call_starts_another() -> None:
    hop = Hop(idle=0.05)

    async def main() -> None:
        for _ in range(3):
            thread = await hop.run(threading.current_thread)
            assert thread.name == "fast-route"
            await asyncio.to_thread(thread.join, 10)
            assert not thread.is_alive() and hop.threads == 0
        # many at once (fewer than anyio's 40 tokens): each gets a thread or a freed one, none is lost
        results = await asyncio.gather(*(hop.run(lambda n=n: n * 2) for n in range(30)))
        assert results == [n * 2 for n in range(30)] and hop.calls == 33

    asyncio.run(main())


def test_the_loops_default_limiter_is_looked_up_once_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    hop = Hop()
    lookups = []
    lookup = anyio.to_thread.current_default_thread_limiter

    def counted() -> anyio.CapacityLimiter:
        lookups.append(1)
        return lookup()

    monkeypatch.setattr(anyio.to_thread, "current_default_thread_limiter", counted)

    async def main() -> None:
        limiter = lookup()
        for _ in range(3):  # each call holds a token of this loop's limiter, found once
            assert await hop.run(lambda: limiter.borrowed_tokens) == 1
        assert limiter.borrowed_tokens == 0

    asyncio.run(main())
    assert len(lookups) == 1
    asyncio.run(main())  # another loop: its own limiter, looked up again
    assert len(lookups) == 2
