"""The MixMonitor post-command hands its file to the running agent over a local Unix socket.

`trustline recordings seal FILE` asks the agent (which already holds the keyring, the store
and warm worker threads) to seal FILE, instead of starting all of that per recording; when
no agent answers, the command seals the file itself, as before. ``agent.cli.main`` tries
``seal_by_agent`` first, so with the agent up the command imports only this module (no
settings, store, asyncio or cryptography: tests/test_recordings_handoff.py checks).

Protocol: one JSON line each way on ``<data dir>/recordings.sock`` (mode 0600, only our own
user and root are served): ``{"seal": FILE, "uniqueid": U}`` → ``{"ok": true, "id": N}`` or
``{"ok": false, "kind": "usage"|"recording"|"keyring"|"io"|"error", "error": MESSAGE}``.

May: (client) find the data folder as ``agent.settings`` does, connect, send one request,
wait for its answer, print it as ``trustline`` would; (server) accept requests from our own
user, hand each to ``RecordingsService.seal_file``, reply. At import time only json, os,
_socket and sys (no typing, pathlib, socket.py or argparse: the client's start is part of every
post-command's time; asyncio, logging and the rest load when serving).
Must not: seal or decrypt anything itself, serve another user, or read recording content.
"""

from __future__ import annotations

import _socket  # socket.py's enum wrappers cost the client more than the rest of it
import json
import os
import sys

# Not ``typing.TYPE_CHECKING``: importing typing alone costs the post-command milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:  # asyncio and pathlib load when serving only: the client starts fast
    import asyncio
    import socket
    from collections.abc import Awaitable, Callable
    from pathlib import Path
    from typing import Any

    Sealer = Callable[[str, str | None], Awaitable[int]]
    Classify = Callable[[BaseException], str | None]

LOGGER = __name__  # logging, secrets, struct, contextlib also load when serving only

SOCKET_NAME = "recordings.sock"
_CONNECT_SECONDS = 2.0
_REPLY_SECONDS = 3600.0  # a very long recording on a slow disk; then we seal it ourselves
_MAX_LINE = 65536


class AgentDown(Exception):
    """No agent answered on the socket (not running, stale socket, or it went away)."""


def request_seal(
    sock_path: str | os.PathLike[str],
    file: str,
    uniqueid: str | None,
    *,
    reply_seconds: float = _REPLY_SECONDS,
) -> dict[str, Any]:
    """Ask the agent listening on ``sock_path`` to seal ``file``; its JSON answer.

    Raises AgentDown when nobody answers, so the caller can seal the file itself: safe even
    if the agent did start on it, because every sealing process takes the folder's flock and
    adopts a file already sealed.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(_CONNECT_SECONDS)
        try:
            sock.connect(os.fspath(sock_path))
        except OSError as exc:  # none there, refused, stale, or a path too long for AF_UNIX
            raise AgentDown(str(exc)) from None
        request = json.dumps({"seal": file, "uniqueid": uniqueid}) + "\n"
        sock.settimeout(reply_seconds)
        try:
            sock.sendall(request.encode())
            reply = _read_line(sock)
        except OSError as exc:  # TimeoutError included
            raise AgentDown(str(exc)) from None
    finally:
        sock.close()
    if not reply.endswith(b"\n"):
        raise AgentDown("the agent closed the connection without an answer")
    answer = json.loads(reply)
    if not isinstance(answer, dict):
        raise AgentDown("the agent sent an answer we do not understand")
    return answer


def _read_line(sock: _socket.socket) -> bytes:
    """One line of at most ``_MAX_LINE`` bytes, its newline included (none: cut short)."""
    got = b""
    while b"\n" not in got and len(got) < _MAX_LINE:
        more = sock.recv(_MAX_LINE - len(got))
        if not more:
            break
        got += more
    end = got.find(b"\n")
    return got if end < 0 else got[: end + 1]


class HandoffServer:
    """The agent's end: a Unix socket in the data folder, mode 0600, our own user only."""

    def __init__(self, path: Path, seal: Sealer, classify: Classify) -> None:
        self.path = path
        self._seal = seal
        self._classify = classify  # error kind for an expected failure, None: unexpected
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> bool:
        """Listen; False (and a warning) when another live agent already listens there."""
        import asyncio
        import contextlib
        import logging
        import secrets
        import socket

        log = logging.getLogger(LOGGER)

        if await asyncio.to_thread(_answers, self.path):
            log.warning(
                "recordings: another agent listens on %s; post-commands go to it", self.path
            )
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound under a private name, made 0600, then moved over any stale socket: there is
        # never a moment when the socket exists with looser permissions.
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        try:
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            sock.listen(64)
            os.replace(tmp, self.path)
        except BaseException as exc:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not isinstance(exc, OSError):
                raise
            # A data folder path too long for a Unix socket, a read-only folder: the agent
            # runs on, post-commands seal by themselves.
            log.warning(
                "recordings: no hand-off socket at %s (%s); post-commands will seal by themselves",
                self.path,
                exc,
            )
            return False
        self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=_MAX_LINE)
        return True

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        try:
            if os.stat(self.path).st_ino == self._inode:  # not a newer agent's socket
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer.get_extra_info("socket")):
                return
            line = await reader.readline()
            answer = await self._answer(line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, ValueError):  # readline: ValueError past the limit
            pass  # the post-command went away, or sent garbage: nothing to answer
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            file, uniqueid = request["seal"], request.get("uniqueid")
            if not isinstance(file, str) or not (uniqueid is None or isinstance(uniqueid, str)):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            return {"ok": False, "kind": "usage", "error": "malformed hand-off request"}
        try:
            return {"ok": True, "id": await self._seal(file, uniqueid)}
        except Exception as exc:
            kind = self._classify(exc)
            if kind is None:
                import logging

                logging.getLogger(LOGGER).exception("recordings: hand-off of %s failed", file)
                kind = "error"
            return {"ok": False, "kind": kind, "error": str(exc)}


def _answers(path: Path) -> bool:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_CONNECT_SECONDS)
        sock.connect(str(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _same_user(sock: socket.socket | None) -> bool:
    """SO_PEERCRED: serve our own user and root only (the socket's mode says the same)."""
    if sock is None:
        return False
    import socket
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.geteuid(), 0)


# The answer's error kind -> exit code, as ``trustline`` maps the same errors (sysexits.h).
EXIT_CODES = {"usage": 64, "recording": 65, "keyring": 78, "io": 74}
_SYSTEM_DATA_DIR = "/var/lib/trustline"


def data_dir(explicit: str | None = None) -> Path:
    """The data folder exactly as ``agent.settings`` finds it, without loading pydantic:
    ``--data-dir``, else ``TRUSTLINE_DATA_DIR`` (any case, as pydantic-settings reads it),
    else /var/lib/trustline when it exists, else $XDG_STATE_HOME/trustline
    (tests/test_recordings_handoff.py holds the two to the same answers)."""
    from pathlib import Path

    return Path(_data_folder(explicit))


def _data_folder(explicit: str | None) -> str:
    """``data_dir`` as a string, with ``os.path`` only: the post-command needs no pathlib."""
    chosen = explicit
    if chosen is None:
        chosen = os.environ.get("TRUSTLINE_DATA_DIR")
    if chosen is None:
        chosen = next((v for k, v in os.environ.items() if k.upper() == "TRUSTLINE_DATA_DIR"), None)
    if chosen is None:
        if os.path.isdir(_SYSTEM_DATA_DIR):
            return _SYSTEM_DATA_DIR
        state = os.environ.get("XDG_STATE_HOME", "")
        base = state if os.path.isabs(state) else os.path.expanduser("~/.local/state")
        return os.path.join(base, "trustline")
    return os.path.abspath(os.path.expanduser(chosen))


def seal_by_agent(argv: list[str]) -> int | None:
    """``trustline recordings seal FILE [--uniqueid U] [--data-dir D] [--config C]``, answered
    by the running agent before the rest of Trustline is imported: MixMonitor runs it after
    every recorded call. The exit code, or None when the full command must run: no agent
    answers (it then seals the file itself), or arguments this short path does not read
    (``--help``, anything unexpected), which the full parser answers as usual.
    """
    options: dict[str, str] = {}
    files: list[str] = []
    rest = iter(argv)
    for arg in rest:
        name, eq, value = arg.partition("=")
        if name in ("--uniqueid", "--data-dir", "--config"):
            got = value if eq else next(rest, None)
            if got is None:
                return None
            options[name] = got
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            files.append(arg)
    if len(files) != 1:
        return None
    try:
        folder = _data_folder(options.get("--data-dir"))
        answer = request_seal(
            os.path.join(folder, SOCKET_NAME), files[0], options.get("--uniqueid")
        )
    except AgentDown:
        return None
    return report(answer, files[0])


def report(answer: dict[str, Any], file: str) -> int:
    """Print the agent's answer as ``trustline recordings seal`` does; its exit code."""
    if answer.get("ok"):
        print(f"sealed as recording {answer.get('id')} (by the running agent)")
        return 0
    print(f"trustline: the agent could not seal {file}: {answer.get('error')}", file=sys.stderr)
    return EXIT_CODES.get(str(answer.get("kind")), 1)


def main(argv: list[str] | None = None) -> int:
    """A light post-command: ``python -m agent.recordings.handoff FILE [--uniqueid U]
    [--data-dir D]``, the arguments of ``trustline recordings seal``.

    Hands FILE to the running agent without importing the rest of Trustline (not even
    argparse); when no agent answers, or for ``--help`` and arguments it does not read, runs
    ``trustline recordings seal`` in this process. The data folder is found as ``trustline``
    finds it (``data_dir``).
    """
    args = sys.argv[1:] if argv is None else argv
    handed = seal_by_agent(args)
    if handed is not None:
        return handed
    from agent.cli import main as trustline

    return trustline(["recordings", "seal", *args])


if __name__ == "__main__":
    raise SystemExit(main())
