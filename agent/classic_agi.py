"""``trustline-agi``: the classic (one process per call) AGI script, for dialplans that run
``AGI(trustline-agi,outbound,<purpose>,<callee>[,<case_ref>])`` or
``AGI(trustline-agi,inbound,<dialled>[,<attestation>[,<verify_result>]])`` instead of FastAGI.

Asterisk starts the script for each call and speaks AGI over its stdin/stdout. The script
reads the AGI environment with pyst2, opens a FastAGI session to the running agent (the same
route, the same decision code and deadline as ``agi://``) and relays: each command the agent
sends goes to Asterisk, each reply comes back to the agent, byte for byte. The agent is found at
``$TRUSTLINE_AGI_LISTEN`` (its own setting), else the dialplan global ``TRUSTLINE_AGI_URL``,
else 127.0.0.1:4573.

If the agent cannot be reached, or has not finished its answer within
``$TRUSTLINE_CLASSIC_DEADLINE_MS`` (500 ms), the script applies the dialplan's own fallback
(dialplan/trustline.conf): outbound, the caller ID from AstDB ``trustline/fallback/<purpose>``,
else the global ``TRUSTLINE_FALLBACK_CID``, with ``TRUSTLINE_STATUS=fallback``; inbound,
``TRUSTLINE_VERDICT=allow``. The call always goes on.

This module may read stdin, write stdout and open one TCP connection. It must not decide
anything, must not import the agent's services (every call pays its start-up), and must not
write a phone number to stderr (Asterisk logs what AGI scripts print there).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from typing import BinaryIO

from asterisk import agi as pyst2

from agent import contract

MAX_LINE = 8192  # as the FastAGI server: a longer line is not Asterisk
MAX_HEADERS = 200
DEFAULT_AGENT = ("127.0.0.1", 4573)
DEFAULT_DEADLINE_MS = 500
FALLBACK_REASON = "agent_unreachable"
# The variable whose answer means the agent's answer is complete, per route.
_ANSWERED_BY = {
    contract.ROUTE_OUTBOUND: contract.VAR_STATUS,
    contract.ROUTE_INBOUND: contract.VAR_VERDICT,
}
_PURPOSE_CHARS = re.compile(r"[^-A-Za-z0-9_]")  # as the dialplan's FILTER(-A-Za-z0-9_,...)
_NUMBER_CHARS = re.compile(r"[^0-9+]")


class BadInput(Exception):
    """Stdin is not an AGI environment (an oversized line, endless headers, early end)."""


class AgentSilent(Exception):
    """The agent could not be reached or did not finish its answer in time."""


class _Stdin:
    """What pyst2 reads through: bounded lines, never a decoding error (Asterisk passes the
    channel's bytes as they are). pyst2 reads unbounded lines and decodes strictly."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.in_environment = True
        self._environment_lines = 0

    def read_bytes(self) -> bytes:
        line = self.raw.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadInput(f"a line longer than {MAX_LINE} bytes")
        return line

    def readline(self) -> str:
        line = self.read_bytes()
        if self.in_environment:
            self._environment_lines += 1
            if self._environment_lines > MAX_HEADERS:
                raise BadInput(f"more than {MAX_HEADERS} environment lines")
            if not line:
                raise BadInput("stdin closed before the end of the AGI environment")
        elif not line:
            raise EOFError  # Asterisk closed the pipe: the channel is gone
        return line.decode("utf-8", "replace")


class _Stdout:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw

    def write(self, text: str) -> None:
        self.raw.write(text.encode("utf-8"))

    def flush(self) -> None:
        self.raw.flush()


class _Discard:
    """pyst2 writes every environment line and command to stderr: phone numbers included."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def parse_address(value: str) -> tuple[str, int] | None:
    """``host:port``, ``[v6]:port`` or ``agi://host:port/...``; a wildcard host is loopback."""
    value = value.strip()
    if value.startswith("agi://"):
        value = value[len("agi://") :].split("/", 1)[0]
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def fastagi_headers(
    env: dict[str, str], route: str, args: list[str], host: str, port: int
) -> bytes:
    """The header block Asterisk would send for ``AGI(agi://host:port/<route>,args...)``."""
    where = f"[{host}]" if ":" in host else host
    lines = [
        "agi_network: yes",
        f"agi_network_script: {route}",
        f"agi_request: agi://{where}:{port}/{route}",
    ]
    for key, value in env.items():
        if key.startswith("agi_") and not key.startswith(
            ("agi_arg_", "agi_network", "agi_request")
        ):
            lines.append(f"{key}: {value}")
    lines += [f"agi_arg_{i}: {arg}" for i, arg in enumerate(args, 1)]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class Script:
    def __init__(self, agi: pyst2.AGI, stdin: _Stdin, stdout: BinaryIO) -> None:
        self.agi = agi
        self.stdin = stdin
        self.stdout = stdout
        self.relayed = 0  # commands of the agent's answer already passed to Asterisk
        self.answered = False
        self.hangup_sent = False

    def agent_address(self) -> tuple[str, int]:
        listen = os.environ.get("TRUSTLINE_AGI_LISTEN", "")
        address = parse_address(listen) if listen else None
        if address is None:
            url = self.agi.get_variable("TRUSTLINE_AGI_URL")  # the dialplan's global, if any
            address = parse_address(url) if url else None
        return address or DEFAULT_AGENT

    def _asterisk_reply(self) -> list[bytes]:
        """One reply: ``100 Trying`` lines first, a ``520-`` block to its ``520 `` end."""
        lines = []
        while True:
            line = self.stdin.read_bytes()
            if not line:
                raise EOFError
            lines.append(line)
            if line.startswith(b"100 "):
                continue
            if line.startswith(b"520-"):
                while not line.startswith(b"520 ") and len(lines) < 200:
                    line = self.stdin.read_bytes()
                    if not line:
                        raise EOFError
                    lines.append(line)
            return lines

    def relay(self, route: str, args: list[str], deadline: float) -> None:
        """Pass the agent's answer to Asterisk. Raises AgentSilent if it cannot finish."""
        started = time.monotonic()
        host, port = self.agent_address()
        marker = f"SET VARIABLE {_ANSWERED_BY[route]} ".encode()
        try:
            sock = socket.create_connection((host, port), timeout=deadline)
        except OSError as exc:
            raise AgentSilent(
                f"agent at {host}:{port} unreachable ({exc.strerror or exc})"
            ) from None
        # One short line each way per command: no Nagle wait for the agent's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock, sock.makefile("rb") as agent:
            try:
                sock.sendall(fastagi_headers(self.agi.env, route, args, host, port))
                while True:
                    # The whole answer within the deadline, as the FastAGI subroutine expects.
                    sock.settimeout(max(deadline - (time.monotonic() - started), 0.001))
                    command = agent.readline(MAX_LINE + 1)
                    if not command:
                        break  # the agent closed the session: its answer is complete
                    if not command.endswith(b"\n"):
                        raise AgentSilent("agent sent an unterminated or oversized line")
                    self.stdout.write(command)
                    self.stdout.flush()
                    self.relayed += 1
                    reply = self._asterisk_reply()
                    # pyst2's SIGHUP handler (Asterisk signals a hang-up) sets this flag.
                    if self.agi._got_sighup and not self.hangup_sent:
                        reply.insert(0, b"HANGUP\n")  # as Asterisk tells a FastAGI server
                        self.hangup_sent = True
                    sock.sendall(b"".join(reply))
                    if command.startswith(marker) and reply[-1].startswith(b"200"):
                        self.answered = True
            except OSError as exc:
                if self.answered:
                    return  # caller ID (or verdict) already set: keep the agent's answer
                if isinstance(exc, TimeoutError):
                    raise AgentSilent(f"agent at {host}:{port} did not answer in time") from None
                raise AgentSilent(
                    f"agent at {host}:{port} failed ({exc.strerror or exc})"
                ) from None
        if not self.answered:
            raise AgentSilent(f"agent at {host}:{port} closed without an answer")

    def _set(self, name: str, value: str) -> None:
        # Values are filtered to a caller ID's characters, a constant, or the channel's own name;
        # quoted as one AGI argument (no control character can start a second command).
        clean = "".join(c if c >= " " else " " for c in value)
        clean = clean.replace("\\", "\\\\").replace('"', '\\"')
        self.agi.execute("SET VARIABLE", name, f'"{clean}"')

    def fallback(self, route: str, args: list[str]) -> None:
        """The dialplan subroutine's fallback (dialplan/trustline.conf, trustline-inbound.conf)."""
        if route == contract.ROUTE_INBOUND:
            self._set(contract.VAR_VERDICT, contract.VERDICT_ALLOW)
            self._set(contract.VAR_SCORE, "")
            self._set(contract.VAR_REASONS, "")
            return
        purpose = _PURPOSE_CHARS.sub("", args[0] if args else "")
        safe_cid = ""
        if purpose:
            key = f"{contract.ASTDB_FALLBACK_PREFIX}/{purpose}"
            try:
                safe_cid = self.agi.database_get(contract.ASTDB_FAMILY, key)
            except pyst2.AGIDBError:
                safe_cid = ""
        if not safe_cid:
            safe_cid = self.agi.get_variable(contract.DIALPLAN_GLOBAL_FALLBACK_CID)
        safe_cid = _NUMBER_CHARS.sub("", safe_cid)
        if safe_cid:
            self._set(contract.CALLERID_NUM, safe_cid)
        if self.relayed:  # undo a half-set answer, as the subroutine does
            name = self.agi.env.get("agi_calleridname", "")
            self._set(contract.CALLERID_NAME, "" if name == "unknown" else name)
        self._set(contract.VAR_STATUS, contract.STATUS_FALLBACK)
        self._set(contract.VAR_POOL, "")
        self._set(contract.VAR_REASON, FALLBACK_REASON)


def _deadline() -> float:
    raw = os.environ.get("TRUSTLINE_CLASSIC_DEADLINE_MS", "")
    return (int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_DEADLINE_MS) / 1000.0


def _say(message: str) -> None:
    sys.stderr.write(f"trustline-agi: {message}\n")
    sys.stderr.flush()


USAGE = (
    "usage (from the dialplan): AGI(trustline-agi,outbound,<purpose>,<callee>[,<case_ref>])"
    " or AGI(trustline-agi,inbound,<dialled>[,<attestation>[,<verify_result>]])"
)


def main() -> int:
    if sys.stdin.isatty():
        _say(USAGE)
        return 64
    stdin = _Stdin(sys.stdin.buffer)
    try:
        agi = pyst2.AGI(stdin=stdin, stdout=_Stdout(sys.stdout.buffer), stderr=_Discard())
    except BadInput as exc:
        _say(f"not an AGI environment on stdin: {exc}")
        return 1
    stdin.in_environment = False
    args: list[str] = []
    while f"agi_arg_{len(args) + 1}" in agi.env:
        args.append(agi.env[f"agi_arg_{len(args) + 1}"])
    route = args.pop(0) if args else ""
    if route not in _ANSWERED_BY:
        _say(f"unknown route {route[:20]!r}; {USAGE}")
        return 64
    script = Script(agi, stdin, sys.stdout.buffer)
    try:
        try:
            script.relay(route, args, _deadline())
        except AgentSilent as exc:
            _say(f"{exc}; applying the dialplan's fallback")
            script.fallback(route, args)
    except (EOFError, BrokenPipeError, pyst2.AGIHangup):
        return 0  # the channel is gone: nothing left to set
    except (BadInput, pyst2.AGIError) as exc:
        _say(f"Asterisk's reply was not understood: {type(exc).__name__}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
