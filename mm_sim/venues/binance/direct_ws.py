"""A websocket connection that hands text frames to the client inside the socket read.

Why: the ``websockets`` library parses frames with a generator in pure Python and queues each
one for a reader task that runs at the event loop's next turn, tens of microseconds per frame.
On the live path that is most of the latency budget, so after the handshake this connection
splits server frames itself and leaves everything unusual to the library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.protocol import OPEN

Clock = Callable[[], int]
Deliver = Callable[[Any, int, int], None]  # (frame payload, receive monotonic ns, clock())


class _DirectConnection(ClientConnection):
    """A websocket connection that hands text frames over as soon as their bytes are read.

    The library parses frames with a generator in pure Python and queues each one for a reader
    task, which runs at the event loop's next turn: tens of microseconds per frame. After the
    handshake this connection splits the byte stream into frames itself (server frames are
    unmasked, so a frame is a 2-10 byte header and the payload) and gives every complete,
    unfragmented text frame to ``deliver`` within the same ``data_received`` call, stamped with
    when that socket read returned. Every other frame (ping, pong, close, binary, fragments,
    reserved bits, oversized) is fed to the library whole, so it still answers pings and runs the
    closing handshake; after the first data frame it does not expect, the connection stops
    splitting and leaves everything to the library and the reader task (which keep frames in
    order). Frames that arrive before ``deliver`` is set are kept in ``early`` for the client to
    take first; ``after_read`` runs once a read's frames are delivered.
    """

    clock: Clock = staticmethod(time.time_ns)  # bound per client by _direct_connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver: Deliver | None = None
        self.after_read: Callable[[], None] | None = None
        self.early: list[tuple[Any, int, int]] = []
        self.rx_mono = 0
        self.rx_local = 0
        self._head = bytearray()  # bytes before the end of the handshake response
        self._buf = bytearray()  # bytes after it, not yet a complete frame
        self._split = True  # still splitting frames ourselves
        self._opened = False
        self._limit = self.protocol.max_message_size or (1 << 62)

    def data_received(self, data: bytes) -> None:
        self.rx_mono = time.monotonic_ns()
        self.rx_local = self.clock()
        if not self._split:
            super().data_received(data)
        elif not self._opened:
            self._handshake(data)
        else:
            self._frames(data)
        if self.after_read is not None:
            self.after_read()

    def _handshake(self, data: bytes) -> None:
        """The library reads exactly the HTTP response; frames after it are split here."""
        head = self._head
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return
        rest = bytes(head[end + 4 :])
        super().data_received(bytes(head[: end + 4]))
        self._head = bytearray()
        self._opened = True
        if self.protocol.state is not OPEN:
            self._split = False  # refused or failed: the library deals with what follows
            if rest:
                super().data_received(rest)
        elif rest:
            self._frames(rest)

    def _frames(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        i = 0
        while n - i >= 2:
            b0 = buf[i]
            b1 = buf[i + 1]
            size = b1 & 0x7F
            h = 2
            if size == 126:
                if n - i < 4:
                    break
                size = int.from_bytes(buf[i + 2 : i + 4], "big")
                h = 4
            elif size == 127:
                if n - i < 10:
                    break
                size = int.from_bytes(buf[i + 2 : i + 10], "big")
                h = 10
            if b1 & 0x80 or size > self._limit:  # masked or oversized: the library fails it
                self._give_up(buf, i)
                return
            end = i + h + size
            if end > n:
                break
            if b0 == 0x81:  # FIN, no reserved bits, text
                payload = bytes(buf[i + h : end])
                if self.deliver is not None:
                    self.deliver(payload, self.rx_mono, self.rx_local)
                else:
                    self.early.append((payload, self.rx_mono, self.rx_local))
            elif b0 in (0x88, 0x89, 0x8A):  # close, ping, pong: the library's business
                super().data_received(bytes(buf[i:end]))
            else:
                self._give_up(buf, i)
                return
            i = end
        if i:
            del buf[:i]

    def _give_up(self, buf: bytearray, i: int) -> None:
        """A frame we do not split: from here on every byte goes to the library, in order."""
        self._split = False
        rest = bytes(buf[i:])
        buf.clear()
        super().data_received(rest)


def _direct_connection(clock: Clock) -> type[_DirectConnection]:
    """The connection class with this client's clock (receive times on the exchange clock)."""
    return type("DirectConnection", (_DirectConnection,), {"clock": staticmethod(clock)})


__all__ = ["Clock", "Deliver", "_DirectConnection", "_direct_connection"]
