"""One AMI session over asyncio streams: banner, login, actions with timeouts, heartbeat.

May: open one TCP connection, log in (plain or MD5 challenge), send actions and match their
responses (event lists included), hand every other event to one synchronous callback.
Must not: reconnect (the link supervises), touch the store, block in the event callback, or
log a secret. Every read is bounded in size (``Framer``) and in time (banner/login/action
timeouts, an idle timeout the heartbeat keeps from firing on a healthy link).

Why not panoramisk's ``Manager`` (tests/test_ami_panoramisk.py shows each point over a real
socket): it decodes each TCP read on its own with ``errors="ignore"`` (a UTF-8 character split
across reads vanishes); its Ping never checks for the Pong (a silent link stays "connected"
forever); actions have no timeout (a future waits forever on a dead link); a failed login
raises nothing and it retries on a fixed 2 s timer forever; its read buffer has no bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.ami.protocol import (
    MAX_MESSAGE_BYTES,
    Framer,
    FramingError,
    Message,
    encode_action,
    parse_banner,
)
from agent.errors import TrustlineError

log = logging.getLogger(__name__)

# An event list (CoreShowChannels on a busy PBX) is bounded too.
MAX_LIST_EVENTS = 100_000
_STREAM_LIMIT = 64 * 1024


class AmiError(TrustlineError):
    """The AMI link failed."""


class AmiConnectionError(AmiError):
    """No session: refused, closed by the peer, dead (no Pong), or not AMI at all."""


class AmiLinkDead(AmiConnectionError):
    """The socket looks open but nothing comes back (no Pong, no data): a dead link."""


class AmiAuthError(AmiError):
    """Asterisk refused our login. Retrying at once will not help; the config is wrong."""


class AmiTimeout(AmiError):
    """An action got no (complete) response within its deadline."""


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error`` to an action we needed to succeed."""


@dataclass(frozen=True, slots=True)
class AmiResponse:
    ok: bool
    fields: Message
    events: tuple[Message, ...] = ()

    @property
    def message(self) -> str:
        return self.fields.get("Message", "")


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[AmiResponse]
    response: Message | None = None
    events: list[Message] = field(default_factory=list)


class AmiClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_event: Callable[[Message], None],
        action_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        login_timeout: float = 5.0,
        idle_timeout: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.peer = f"{host}:{port}"
        self._host, self._port = host, port
        self._on_event = on_event
        self._action_timeout = action_timeout
        self._connect_timeout = connect_timeout
        self._login_timeout = login_timeout
        self._idle_timeout = idle_timeout
        self._framer = Framer(max_message_bytes)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._closed = asyncio.Event()
        self.close_reason = ""
        self._idle_expired = False
        self.version = ""
        self.events_received = 0

    # -- session ---------------------------------------------------------------------------

    async def connect(
        self, username: str, secret: str, *, md5: bool = False, events: str = "on"
    ) -> None:
        """Open the socket, check the banner, log in. Returns only once Asterisk accepted us."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                # limit bounds the banner line (readuntil) and sets how much the stream
                # buffers before pausing the socket: too small, and every read is tiny.
                self._reader, self._writer = await asyncio.open_connection(
                    self._host, self._port, limit=_STREAM_LIMIT
                )
                # The banner is one CRLF-terminated line with no blank line after it.
                line = await self._reader.readuntil(b"\r\n")
        except TimeoutError:
            await self.close(logoff=False)
            raise AmiConnectionError(
                f"{self.peer}: no AMI banner within {self._connect_timeout} s"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close(logoff=False)
            raise AmiConnectionError(f"{self.peer}: cannot connect: {exc}") from None
        try:
            self.version = parse_banner(line)
        except FramingError as exc:
            await self.close(logoff=False)
            raise AmiConnectionError(f"{self.peer}: {exc}") from None
        self._read_task = asyncio.create_task(self._read_loop(), name=f"ami-read {self.peer}")
        try:
            await self._login(username, secret, md5=md5, events=events)
        except BaseException:
            await self.close(logoff=False)
            raise
        log.info("%s: AMI %s, logged in as %r", self.peer, self.version, username)

    async def _login(self, username: str, secret: str, *, md5: bool, events: str) -> None:
        fields = {"Username": username, "Events": events}
        try:
            if md5:
                challenge = await self.action(
                    "Challenge", {"AuthType": "MD5"}, deadline=self._login_timeout
                )
                if not challenge.ok or not challenge.fields.get("Challenge"):
                    raise AmiAuthError(
                        f"{self.peer}: MD5 challenge refused: {challenge.message or 'no challenge'}"
                    )
                key = hashlib.md5(
                    (challenge.fields["Challenge"] + secret).encode("utf-8")
                ).hexdigest()
                fields.update({"AuthType": "MD5", "Key": key})
            else:
                fields["Secret"] = secret
            # Asterisk delays a refusal by one second, then closes: the timeout must exceed that.
            answer = await self.action("Login", fields, deadline=self._login_timeout)
        except AmiTimeout:
            raise AmiConnectionError(
                f"{self.peer}: no answer to Login within {self._login_timeout} s"
            ) from None
        if not answer.ok:
            why = answer.message or "no reason given"
            raise AmiAuthError(f"{self.peer}: login refused for user {username!r}: {why}")

    async def close(self, *, logoff: bool = True, reason: str = "closed by us") -> None:
        if logoff and not self._closed.is_set() and self._writer is not None:
            with contextlib.suppress(AmiError):
                await self.action("Logoff", deadline=1.0)
        self._shutdown(reason)
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.close_reason

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    # -- actions ---------------------------------------------------------------------------

    async def action(
        self, name: str, fields: Mapping[str, str] | None = None, *, deadline: float | None = None
    ) -> AmiResponse:
        """Send one action and wait for its whole response (list events included)."""
        if self._writer is None or self._closed.is_set():
            raise AmiConnectionError(
                f"{self.peer}: not connected ({self.close_reason or 'never opened'})"
            )
        action_id = f"trustline-{next(self._ids)}"
        pending = _Pending(asyncio.get_running_loop().create_future())
        self._pending[action_id] = pending
        limit = self._action_timeout if deadline is None else deadline
        try:
            async with asyncio.timeout(limit):
                self._writer.write(encode_action(name, action_id, fields or {}))
                await self._writer.drain()
                return await pending.future
        except TimeoutError:
            raise AmiTimeout(f"{self.peer}: no answer to {name} within {limit} s") from None
        except OSError as exc:
            raise AmiConnectionError(f"{self.peer}: {name} not sent: {exc}") from None
        finally:
            self._pending.pop(action_id, None)

    async def heartbeat(self, interval: float, pong_within: float) -> None:
        """Ping every ``interval``; raise AmiConnectionError when a Pong misses ``pong_within``."""
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._closed.wait()
            if self._closed.is_set():
                break
            try:
                await self.action("Ping", deadline=pong_within)
            except AmiTimeout:
                reason = f"no Pong within {pong_within} s: link dead"
                await self.close(logoff=False, reason=reason)
                raise AmiLinkDead(f"{self.peer}: {reason}") from None
        if self._idle_expired:
            raise AmiLinkDead(f"{self.peer}: {self.close_reason}")
        raise AmiConnectionError(f"{self.peer}: {self.close_reason}")

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "connection closed by Asterisk"
        try:
            while True:
                async with asyncio.timeout(self._idle_timeout):
                    data = await self._reader.read(65536)
                if not data:
                    break
                for message in self._framer.feed(data):
                    self._handle(message)
        except TimeoutError:
            self._idle_expired = True
            reason = f"nothing received for {self._idle_timeout} s: link dead"
        except FramingError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"read failed: {exc}"
        finally:
            self._shutdown(reason)

    def _handle(self, message: Message) -> None:
        action_id = message.get("ActionID")
        if action_id is not None:
            pending = self._pending.get(action_id)
            if pending is not None and self._answer(pending, message):
                return
        if "Event" in message:
            self.events_received += 1
            try:
                self._on_event(message)
            except Exception:
                # A bug in one handler must not cost us the link (Asterisk would drop a client
                # that stops reading); log it with the event name only, never the content.
                log.exception("%s: event handler failed on %s", self.peer, message.get("Event"))

    @staticmethod
    def _answer(pending: _Pending, message: Message) -> bool:
        """Feed a message to a pending action; True when it belonged to that action."""
        if pending.future.done():
            return False
        if pending.response is None:
            if "Response" not in message:
                return False
            pending.response = message
            if message.get("EventList", "").lower() != "start":
                pending.future.set_result(
                    AmiResponse(message.get("Response") in ("Success", "Goodbye"), message)
                )
            return True
        if "Event" not in message:
            return False
        if message.get("EventList", "").lower() == "complete" or message["Event"].endswith(
            "Complete"
        ):
            pending.future.set_result(AmiResponse(True, pending.response, tuple(pending.events)))
        elif len(pending.events) < MAX_LIST_EVENTS:
            pending.events.append(message)
        return True

    def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(AmiConnectionError(f"{self.peer}: {reason}"))
        if self._writer is not None:
            self._writer.close()
