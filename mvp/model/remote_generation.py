"""A reply streamed from a model server, cancellable at once even while the server is silent.

`OpenAIEngine` fills a `RemoteGeneration` from its reader thread; `cancel()` also shuts the socket the
reader is blocked on, so a stalled server cannot hold a cancelled reply open until its next token
(or the timeout).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

from mvp.model.engine import Generation


class RemoteGeneration(Generation):
    """A Generation whose cancel() also wakes the reader blocked on the HTTP stream, so a stalled
    server cannot hold a cancelled reply open until its next token (or the timeout)."""

    def __init__(self, stop_strings: Sequence[str] = ()):
        super().__init__(stop_strings)
        self._stream = None
        self._lock = threading.Lock()

    def attach(self, stream) -> None:
        with self._lock:
            self._stream = stream
        if self.cancel_event.is_set():
            self._interrupt()

    def detach(self) -> None:
        """The reader is done with the stream: its connection may go back to the pool untouched."""
        with self._lock:
            self._stream = None

    def cancel(self) -> None:
        super().cancel()
        self._interrupt()

    def _interrupt(self) -> None:
        # Closing an httpx response from another thread does not wake a blocked recv(); shutting the
        # socket down does (the reader then sees the end of the stream with cancel_event set).
        import socket

        with self._lock:
            stream = self._stream
            if stream is None:
                return
            try:
                network = stream.response.extensions.get("network_stream")
                sock = network.get_extra_info("socket") if network is not None else None
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass  # already closed, or a transport without a socket: the next token stops it
