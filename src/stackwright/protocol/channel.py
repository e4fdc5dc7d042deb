"""One framed, bidirectional conversation over a stream, used by both sides.

A `Channel` numbers the requests it sends, matches answers to them by sequence
number, runs a callback for each request the peer sends, and closes the whole
conversation with a logged reason when the peer breaks the protocol.  It never
lets a peer's mistake escape as an exception into the caller's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from stackwright.protocol.framing import (
    DEFAULT_MAX_FRAME,
    Frame,
    ProtocolError,
    describe,
    encode_frame,
    read_frame,
)
from stackwright.protocol.messages import Answer, ErrorAnswer, Goodbye, Message, Notice, Request

log = logging.getLogger(__name__)

RequestHandler = Callable[[Frame], Awaitable[Message | None]]


class ChannelClosed(ConnectionError):
    """The conversation ended before an answer arrived."""


class RemoteError(Exception):
    """The peer answered a request with an `ErrorAnswer`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Channel:
    """Framed request/answer traffic over one reader/writer pair.

    ``on_request`` is awaited for every request the peer sends (each in its own
    task, so a slow command does not hold up the others); what it returns is
    sent back as the answer.  A `RemoteError` raised there is answered as an
    `ErrorAnswer` with its code; any other exception is logged and answered as
    ``internal_error``.  ``on_notice`` receives one-way messages other than
    `Goodbye`, which closes the channel.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: str,
        on_request: RequestHandler,
        max_frame: int = DEFAULT_MAX_FRAME,
    ):
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.on_request = on_request
        self.max_frame = max_frame
        self.close_reason: str | None = None
        self.peer_said_goodbye = False
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def request(self, message: Request, timeout: float | None = None) -> Answer:
        """Send a request and wait for its answer.

        Raises `RemoteError` for an `ErrorAnswer`, `TimeoutError` when no answer
        comes in time, `ChannelClosed` when the conversation ends first.
        """
        if self.closed:
            raise ChannelClosed(f"session with {self.peer} is closed: {self.close_reason}")
        seq = next(self._seq)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            try:
                await self._write(Frame(seq=seq, message=message))
            except ChannelClosed:
                raise
            except (ConnectionError, OSError) as exc:
                await self.close(f"connection lost: {exc}", notify_peer=False)
                raise ChannelClosed(f"session with {self.peer} closed: {self.close_reason}") from None
            async with asyncio.timeout(timeout):
                answer = await future
        finally:
            self._pending.pop(seq, None)
        if isinstance(answer, ErrorAnswer):
            raise RemoteError(answer.code, answer.message)
        if not isinstance(answer, message.answer):
            raise RemoteError(
                "unexpected_answer", f"{self.peer} answered {message.type_name()} with {answer.type_name()}"
            )
        return answer

    async def reply(self, seq: int, answer: Answer) -> None:
        await self._write(Frame(seq=seq, message=answer, reply=True))

    async def notify(self, notice: Notice) -> None:
        await self._write(Frame(seq=0, message=notice))

    async def run(self) -> None:
        """Read frames until the peer leaves, breaks the protocol, or `close` is called."""
        try:
            while not self.closed:
                frame = await read_frame(self.reader, self.max_frame)
                if frame is None:
                    await self.close("connection closed by peer", notify_peer=False)
                    break
                await self._dispatch(frame)
        except ProtocolError as exc:
            log.warning("closing session with %s: %s", self.peer, exc)
            await self.close(str(exc))
        except (ConnectionError, OSError) as exc:
            await self.close(f"connection lost: {exc}", notify_peer=False)
        except asyncio.CancelledError:
            await self.close("session cancelled", notify_peer=False)
            raise
        finally:
            if not self.closed:
                await self.close("session ended", notify_peer=False)

    async def _dispatch(self, frame: Frame) -> None:
        message = frame.message
        if frame.reply:
            future = self._pending.get(frame.seq)
            if not isinstance(message, Answer):
                raise ProtocolError(f"{message.type_name()} sent as a reply")
            if future is None:
                log.info("dropping late or unsolicited %s seq=%s from %s", message.type_name(), frame.seq, self.peer)
            elif not future.done():
                future.set_result(message)
            return
        if isinstance(message, Goodbye):
            log.info("%s closed the session: %s", self.peer, message.reason)
            self.peer_said_goodbye = True
            await self.close(f"peer said goodbye: {message.reason}", notify_peer=False)
            return
        if isinstance(message, Answer):
            raise ProtocolError(f"{message.type_name()} sent without the reply flag")
        task = asyncio.create_task(self._serve(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, frame: Frame) -> None:
        try:
            answer = await self.on_request(frame)
        except RemoteError as exc:
            answer = ErrorAnswer(code=exc.code, message=exc.message)
        except ProtocolError as exc:
            log.warning("closing session with %s: %s", self.peer, exc)
            await self.close(str(exc))
            return
        except Exception:
            log.exception("failed to handle %s seq=%s from %s", describe(frame.message), frame.seq, self.peer)
            answer = ErrorAnswer(code="internal_error", message="internal error; see the log for details")
        if answer is not None and isinstance(frame.message, Request) and not self.closed:
            try:
                await self.reply(frame.seq, answer)
            except (ConnectionError, OSError):
                pass

    async def _write(self, frame: Frame) -> None:
        data = encode_frame(frame)
        async with self._write_lock:
            if self.closed and not isinstance(frame.message, Goodbye):
                raise ChannelClosed(f"session with {self.peer} is closed: {self.close_reason}")
            self.writer.write(data)
            await self.writer.drain()

    async def close(self, reason: str, notify_peer: bool = True) -> None:
        """Close once: tell the peer why (best effort), fail pending requests, drop the stream."""
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set()
        try:
            if notify_peer and not self.writer.is_closing():
                try:
                    async with asyncio.timeout(2):
                        await self._write(Frame(seq=0, message=Goodbye(reason=reason)))
                except (ConnectionError, OSError, TimeoutError, ChannelClosed):
                    pass
            self._drop_requests(reason)
            self.writer.close()
            try:
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()
            except (ConnectionError, OSError, TimeoutError):
                # A peer that cannot be reached never answers TLS's closing handshake, and the
                # transport would wait for it (30 s) before the reader sees the end: a cut link
                # would hold up the next connection that long.
                self.writer.transport.abort()
        except asyncio.CancelledError:
            # The closing task was cancelled midway (the session it served is being torn
            # down): drop the connection now rather than leave it open with a reader on it.
            self._drop_requests(reason)
            self.writer.transport.abort()
            raise

    def _drop_requests(self, reason: str) -> None:
        """Fail the requests still waiting for an answer and cancel the ones being served."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChannelClosed(f"session with {self.peer} closed: {reason}"))
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
