"""A replay AMI server over real TCP, built from the bytes in tests/fixtures/asterisk-captures.

It speaks what those captures show Asterisk saying, byte for byte: the banner, the Login /
Challenge / Ping / DBPut / DBGet / DBDel / CoreShowChannels / Logoff responses (ActionIDs
rewritten to the client's), the 1 s delayed ``Authentication failed`` then close, and the
captured event streams of each call scenario, which tests push with ``play``.

Knobs a test turns to reproduce what goes wrong on a real link: ``secret`` (a wrong one gets
the captured refusal), ``md5_secret`` (the challenge capture), ``silent`` (after login, read
everything and answer nothing: a dead link that TCP never reports), ``chunk`` (write in tiny
slices so messages and UTF-8 characters split across reads), ``drop()`` (close every session,
as Asterisk does with a client that reads too slowly), ``live_channels`` (what
CoreShowChannels lists), ``after_channel_list`` (events raised right after the next
CoreShowChannels reply: a call that ends just after the snapshot). It parses actions with its own few lines, not the agent's parser, so
a parser bug cannot hide on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tests.captures import capture_path

# Every captured AMI scenario with call traffic (not the login or action-only ones).
EVENT_CAPTURES = (
    "ami-answered",
    "ami-busy",
    "ami-noanswer",
    "ami-congestion",
    "ami-inbound",
    "ami-agent-down",
    "ami-hangup-during-agi",
    "ami-userevent",
)


@dataclass(frozen=True)
class Record:
    t: float
    direction: str  # "asterisk" | "agent"
    data: bytes


def load(name: str) -> list[Record]:
    """One capture file (``ami-answered`` or ``ami-answered.jsonl``) as raw byte records."""
    path = capture_path(name if name.endswith(".jsonl") else f"{name}.jsonl")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out.append(Record(rec["t"], rec["dir"], rec["data"].encode("latin-1")))
    return out


def headers(message: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in message.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep and key not in out:
            out[key] = value
    return out


def events(name: str) -> list[bytes]:
    """The unsolicited events Asterisk sent after login in a capture, in order, as bytes."""
    out = []
    for rec in load(name):
        if rec.direction != "asterisk" or not rec.data.startswith(b"Event: "):
            continue
        h = headers(rec.data)
        if h["Event"] in ("FullyBooted", "SuccessfulAuth") or "EventList" in h:
            continue
        out.append(rec.data)
    return out


def _find(name: str, predicate: str) -> bytes:
    for rec in load(name):
        if rec.direction == "asterisk" and predicate in rec.data.decode("latin-1"):
            return rec.data
    raise LookupError(f"{predicate!r} not in {name}")


def with_header(message: bytes, key: str, value: str) -> bytes:
    """Replace one header's value (ActionID, Val, ...) in a captured message, or add it."""
    lines = message.split(b"\r\n")
    prefix = key.encode() + b": "
    new = prefix + value.encode("utf-8")
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            lines[i] = new
            return b"\r\n".join(lines)
    return b"\r\n".join([lines[0], new, *lines[1:]])


def _with_id(message: bytes, action_id: str) -> bytes:
    return with_header(message, "ActionID", action_id)


class _Templates:
    """Every response the server gives, taken from the captures."""

    def __init__(self) -> None:
        self.banner = load("ami-actions")[0].data
        self.login_ok = _find("ami-actions", "Authentication accepted")
        self.fully_booted = _find("ami-actions", "Event: FullyBooted")
        self.login_failed = _find("ami-badlogin", "Authentication failed")
        self.challenge = _find("ami-challenge", "Challenge: ")
        self.pong = _find("ami-actions", "Ping: Pong")
        self.db_updated = _find("ami-actions", "Updated database successfully")
        self.db_get_start = _find("ami-actions", "Result will follow")
        self.db_get_item = _find("ami-actions", "Event: DBGetResponse")
        self.db_get_done = _find("ami-actions", "Event: DBGetComplete")
        self.db_not_found = _find("ami-actions", "Database entry not found")
        self.db_deleted = _find("ami-actions", "Key deleted successfully")
        self.channels_start = _find("ami-actions", "Channels will follow")
        self.channels_done = _find("ami-actions", "Event: CoreShowChannelsComplete")
        self.unknown = _find("ami-actions", "Invalid/unknown command")
        self.goodbye = _find("ami-actions", "Response: Goodbye")
        # A channel listing item: the captured Newchannel of the answered call, renamed.
        self.channel_item = _find("ami-answered", "Event: Newchannel").replace(
            b"Event: Newchannel", b"Event: CoreShowChannel", 1
        )


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    logged_in: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ReplayAmiServer:
    def __init__(
        self,
        *,
        user: str = "trustline",
        secret: str = "capture-secret",
        md5_secret: str | None = None,
        fail_delay: float = 1.0,
        chunk: int = 0,
    ) -> None:
        self.user = user
        self.secret = secret
        self.md5_secret = md5_secret
        self.fail_delay = fail_delay  # Asterisk waits 1 s before refusing a login
        self.chunk = chunk
        self.silent = False
        self.live_channels: dict[str, str] = {}  # Uniqueid -> Linkedid
        self.after_channel_list: list[bytes] = []  # sent once, right after the list
        self.astdb: dict[tuple[str, str], str] = {}
        self.actions: list[dict[str, str]] = []
        self.connections = 0
        self.logins = 0
        self.refused = 0
        self._t = _Templates()
        self._sessions: list[_Session] = []
        self._server: asyncio.Server | None = None
        self._challenge = "188315927"  # the captured challenge
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> ReplayAmiServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action", "").lower() == name.lower()]

    async def wait_for(self, predicate: Callable[[], object], within: float = 5.0) -> None:
        """Bounded wait until ``predicate()`` holds (checked on every server-side change)."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- pushing bytes ---------------------------------------------------------------------

    async def _send(self, session: _Session, data: bytes) -> None:
        async with session.lock:
            if self.chunk:
                for i in range(0, len(data), self.chunk):
                    session.writer.write(data[i : i + self.chunk])
                    await session.writer.drain()
                    await asyncio.sleep(0)
            else:
                session.writer.write(data)
                await session.writer.drain()

    async def play(self, messages: Iterable[bytes]) -> None:
        """Send captured events to every logged-in session, in order."""
        for session in list(self._sessions):
            if session.logged_in:
                for message in messages:
                    await self._send(session, message)

    async def play_split(self, message: bytes, cut: int, pause: float = 0.05) -> None:
        """Send one message in two TCP writes cut at byte ``cut`` (inside a UTF-8 character,
        say), pausing between them so the client reads the halves separately."""
        for session in list(self._sessions):
            if session.logged_in:
                async with session.lock:
                    session.writer.write(message[:cut])
                    await session.writer.drain()
                    await asyncio.sleep(pause)
                    session.writer.write(message[cut:])
                    await session.writer.drain()

    async def drop(self) -> None:
        """Close every session from the server side (Asterisk's writetimeout does this)."""
        for session in self._sessions:
            session.writer.close()
        self._sessions.clear()
        await self._notify()

    # -- serving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self._sessions.append(session)
        self.connections += 1
        await self._notify()
        try:
            await self._send(session, self._t.banner)
            buf = b""
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                buf += data
                while b"\r\n\r\n" in buf:
                    raw, buf = buf.split(b"\r\n\r\n", 1)
                    action = headers(raw)
                    self.actions.append(action)
                    await self._notify()
                    if self.silent and session.logged_in:
                        continue
                    if not await self._answer(session, action):
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            await self._notify()

    async def _answer(self, session: _Session, action: dict[str, str]) -> bool:
        """Answer one action; False closes the session."""
        t, name, aid = self._t, action.get("Action", "").lower(), action.get("ActionID", "")
        if name == "challenge":
            await self._send(
                session, _with_id(with_header(t.challenge, "Challenge", self._challenge), aid)
            )
        elif name == "login":
            if not self._login_ok(action):
                self.refused += 1
                await asyncio.sleep(self.fail_delay)
                await self._send(session, _with_id(t.login_failed, aid))
                return False
            session.logged_in = True
            self.logins += 1
            await self._send(session, _with_id(t.login_ok, aid) + t.fully_booted)
        elif not session.logged_in:
            await self._send(session, _with_id(t.unknown, aid))
        elif name == "ping":
            await self._send(session, _with_id(t.pong, aid))
        elif name == "dbput":
            self.astdb[(action["Family"], action["Key"])] = action.get("Val", "")
            await self._send(session, _with_id(t.db_updated, aid))
        elif name == "dbget":
            value = self.astdb.get((action["Family"], action["Key"]))
            if value is None:
                await self._send(session, _with_id(t.db_not_found, aid))
            else:
                item = t.db_get_item
                for key, val in (
                    ("Family", action["Family"]),
                    ("Key", action["Key"]),
                    ("Val", value),
                ):
                    item = with_header(item, key, val)
                await self._send(
                    session,
                    _with_id(t.db_get_start, aid)
                    + _with_id(item, aid)
                    + _with_id(t.db_get_done, aid),
                )
        elif name == "dbdel":
            found = self.astdb.pop((action["Family"], action["Key"]), None)
            reply = (
                t.db_deleted
                if found is not None
                else with_header(t.db_not_found, "Message", "Database entry does not exist")
            )
            await self._send(session, _with_id(reply, aid))
        elif name == "coreshowchannels":
            items = b""
            for uniqueid, linkedid in self.live_channels.items():
                item = with_header(
                    with_header(t.channel_item, "Uniqueid", uniqueid), "Linkedid", linkedid
                )
                items += _with_id(item, aid)
            done = with_header(t.channels_done, "ListItems", str(len(self.live_channels)))
            await self._send(session, _with_id(t.channels_start, aid) + items + _with_id(done, aid))
            after, self.after_channel_list = self.after_channel_list, []
            for message in after:
                await self._send(session, message)
        elif name == "logoff":
            await self._send(session, _with_id(t.goodbye, aid))
            return False
        else:
            unknown = t.unknown.replace(b"NoSuchAction", action.get("Action", "").encode())
            await self._send(session, _with_id(unknown, aid))
        return True

    def _login_ok(self, action: dict[str, str]) -> bool:
        if action.get("Username") != self.user:
            return False
        if action.get("AuthType", "").lower() == "md5":
            if self.md5_secret is None:
                return False
            expected = hashlib.md5((self._challenge + self.md5_secret).encode()).hexdigest()
            return action.get("Key") == expected
        return action.get("Secret") == self.secret
