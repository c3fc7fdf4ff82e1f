"""systemd's service notification protocol (sd_notify), for ``Type=notify`` units.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). ``$WATCHDOG_USEC`` asks
for ``WATCHDOG=1`` at least that often (we send at half of it); ``$WATCHDOG_PID``, when set,
names the one process the watchdog is meant for. Without ``NOTIFY_SOCKET`` every call is a
no-op, so the agent behaves the same outside systemd.

This module may only send datagrams: it never fails the agent (a lost notification is logged
once) and holds no policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self.address = address
        # Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None.
        self.watchdog_interval = watchdog_usec / 2e6 if address and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = 0
        pid = env.get("WATCHDOG_PID", "")
        if not pid or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                log.warning("sd_notify: WATCHDOG_USEC is not a number; no watchdog pings")
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram. True when sent (or nothing to do)."""
        if self.address is None:
            return True
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode("utf-8"), target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify: cannot notify %s: %s", self.address, exc)
            return False
        return True

    async def watchdog(self) -> None:
        """Ping the watchdog until cancelled; a stalled event loop stops the pings."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
