"""Why agent/agi/server.py owns the FastAGI socket: panoramisk 1.4's Application, checked.

These tests pin the behaviour of the dependency we chose not to use for FastAGI; if a future
panoramisk release fixes them, they fail and the decision can be revisited.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from tests.fake_asterisk import header_block, run_session

PANORAMISK_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from panoramisk.fast_agi import Application

    async def outbound(request):
        await request.send_command('SET VARIABLE TRUSTLINE_STATUS "ok"')

    async def main():
        app = Application()
        app.add_route("outbound", outbound)
        server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def _start_panoramisk() -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PANORAMISK_SERVER, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
    return proc, port


async def test_panoramisk_serves_a_well_formed_session() -> None:
    proc, port = await _start_panoramisk()
    try:
        session = await run_session("127.0.0.1", port, script="outbound", args=["reminder", "1"])
        assert session.variables == {"TRUSTLINE_STATUS": "ok"}
    finally:
        proc.kill()
        await proc.wait()


async def test_panoramisk_does_not_match_a_route_with_a_query_string() -> None:
    # Real dialplans write agi://host/outbound?purpose=reminder (see the capture).
    proc, port = await _start_panoramisk()
    try:
        session = await run_session(
            "127.0.0.1", port, script="outbound?purpose=reminder", args=["reminder"]
        )
        assert session.variables == {}
    finally:
        proc.kill()
        await proc.wait()


async def test_panoramisk_freezes_its_event_loop_when_a_peer_closes_mid_headers() -> None:
    proc, port = await _start_panoramisk()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(header_block("fastagi-outbound.jsonl", "outbound", ["reminder"])[:40])
        await writer.drain()
        writer.close()  # a health probe or a dropped PBX link
        await asyncio.sleep(0.3)
        # Its read loop now spins on EOF without yielding: no other call is ever served.
        try:
            await run_session("127.0.0.1", port, script="outbound", args=["reminder"], timeout=2)
            served = True
        except (TimeoutError, ConnectionError):
            served = False
        assert not served
    finally:
        proc.kill()
        await proc.wait()
