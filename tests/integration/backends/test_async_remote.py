"""On the async path a remote model's calls run on the caller's event loop, so cancelling cuts them off.

The mentor here sits behind the loopback fault proxy, which holds every request for a long time; the
tokenizer is the packaged mentor's own, and nothing else loads. The same path against a real
llama.cpp server is in ``test_remote_mentor.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from mentorcollab_langchain import ChatMentorCollab
from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.models import DEFAULT_MENTOR
from mentorcollab_langchain.serving import free_port
from tests.servers import FaultPlan, fault_proxy

HELD_FOR = 20.0  # seconds the proxy holds each request: far longer than any wait below


def request_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "mentorcollab-request"]


async def test_cancelling_an_astream_cuts_off_the_mentor_call_in_flight() -> None:
    plan = FaultPlan(delay=HELD_FOR)
    with fault_proxy(f"http://127.0.0.1:{free_port()}", plan) as url:
        mentor = OpenAICompatibleBackend(url, model="mentor", tokenizer=DEFAULT_MENTOR, timeout=60.0, max_retries=0)
        _ = mentor.tokenizer  # loaded before the clock starts: on a fresh cache it is converted from the GGUF first
        model = ChatMentorCollab(generator=ScriptedBackend("one two three four"), mentor=mentor, probe_rate=1.0)

        async def consume() -> list[str]:
            return [chunk.content async for chunk in model.astream("count")]

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 30
        while plan.requests == 0 and time.monotonic() < deadline:  # the first probe is now held by the proxy
            await asyncio.sleep(0.05)
        assert plan.requests == 1 and request_threads(), "the run should be waiting on its first mentor call"
        cancelled_at = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while request_threads() and time.monotonic() - cancelled_at < 10:
            await asyncio.sleep(0.05)
        # A blocking client would keep the worker waiting for the proxy's answer; the async one is cut off.
        assert not request_threads(), "the worker thread was still waiting on the mentor after the cancel"
        assert time.monotonic() - cancelled_at < HELD_FOR / 2
        assert plan.requests == 1, "a cancelled run must not call the mentor again"
