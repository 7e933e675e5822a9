"""A transport wrapper that sends the writes of one event-loop step in a single send().

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and the body in a second write. A worker killed between the two
(SIGKILL, the OOM killer, a segfault) leaves the proxy holding the headers of a response
that can never complete: Nginx has already passed them on, so it cannot retry the request
on another server, and the client gets a truncated response. Under CPU contention the gap
is not microseconds: the first write wakes Nginx, which may preempt the worker before its
second write. The worker-crash scenario (tests/reliability/test_worker_crash.py) saw a GET
fail this way in about one run in five.

Joining the writes made within one loop step (a Starlette `Response` sends its start and
its body back to back) makes a small response leave whole or not at all; a killed worker
then leaves Nginx with nothing, and Nginx retries a GET on the other server. Streaming
responses lose nothing either: each chunk leaves at the end of the step that wrote it.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport(asyncio.Transport):
    """Delegates to `transport`, buffering `write()`s until the end of the loop step."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._flush_scheduled = False

    # --- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview[int]) -> None:
        self._pending.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        # What was written before close() is sent before the FIN.
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    # --- plain delegation ---------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()
