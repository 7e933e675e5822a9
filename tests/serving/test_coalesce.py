"""The coalescing transport: the writes of one event-loop step leave in one write, so a
response's headers never leave without its body (tests/reliability/test_worker_crash.py
shows why against a real worker)."""

from __future__ import annotations

import asyncio

from slipway.serving.coalesce import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7


async def next_step() -> None:
    await asyncio.sleep(0)


async def test_writes_of_one_step_leave_as_one() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())

    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(memoryview(b"{}"))
    assert real.writes == []
    assert transport.get_write_buffer_size() == 7 + 40
    await next_step()

    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_of_later_steps_leave_separately() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())

    transport.write(b"chunk 1")
    await next_step()
    transport.write(b"chunk 2")
    await next_step()

    assert real.writes == [b"chunk 1", b"chunk 2"]


async def test_close_sends_what_was_written_first() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())

    transport.write(b"last response")
    transport.close()
    await next_step()

    assert real.events == ["write", "close"]
    assert real.writes == [b"last response"]


async def test_abort_drops_what_was_not_sent() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())

    transport.write(b"never sent")
    transport.abort()
    await next_step()

    assert real.events == ["abort"]


async def test_nothing_is_written_to_a_transport_closed_meanwhile() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())

    transport.write(b"too late")
    real.closing = True  # the peer went away within the step
    await next_step()

    assert real.writes == []
