"""bluesky's internals that xrd-bluesky relies on (bluesky 1.14 and 1.15).

* :class:`MessageDispatcher`: ``bluesky.callbacks.zmq.RemoteDispatcher`` with its
  receive loop (the private coroutine ``_poll``, reading the private ``_socket``)
  replaced by one handing every message, as received, to a method of the subclass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bluesky.callbacks.zmq import RemoteDispatcher

from .releases import ReleaseRange

RELEASES = ReleaseRange("bluesky", "1.14", "1.16", __name__,
                        "RemoteDispatcher._poll, the coroutine start() runs, and its socket RemoteDispatcher._socket")
RELEASES.check()


class MessageDispatcher(RemoteDispatcher):
    """bluesky's ``RemoteDispatcher`` whose receive loop hands every message (the bytes
    the proxy forwarded) to :meth:`receive`, which subclasses define; :meth:`listening`
    is called once the loop runs, :meth:`stop_soon` ends :meth:`start`.

    Parameters
    ----------
    address : str
        The proxy's output port, a 0MQ endpoint (``tcp://host:port``).
    deserializer : callable
        Given to bluesky's dispatcher; the loop here never calls it (give one that never
        unpickles, so that bluesky's loop would not either).
    """

    def __init__(self, address: str, *, deserializer: Callable[[bytes], dict]):
        super().__init__(address, deserializer=deserializer)
        self._poll_task: asyncio.Task | None = None

    def start(self) -> None:
        """Receive and dispatch until stopped (blocks); the socket is closed at the end."""
        try:
            super().start()
        except asyncio.CancelledError:  # stop_soon()
            pass

    def stop_soon(self) -> None:
        """Make :meth:`start` return after the messages already received are handled
        (safe from another thread; once it has returned, a no-op)."""
        if self._poll_task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._poll_task.cancel)

    def listening(self) -> None:
        """Called once, in the loop (``self.loop``), when the socket is connecting and the
        loop about to receive; nothing here."""

    def receive(self, message: bytes) -> None:
        """Handle one message, in the loop (``self.loop``): subclasses dispatch its
        document (``self.loop.call_soon(self.process, name, doc)``) or skip it."""
        raise NotImplementedError(f"{type(self).__name__} must define receive()")

    async def _poll(self) -> None:
        self._poll_task = asyncio.current_task()
        self.listening()
        while True:
            self.receive(await self._socket.recv())
