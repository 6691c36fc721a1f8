"""The chaos benchmark's own parts: the proxy that cuts the database really cuts, and the
benchmark refuses to run anywhere but on PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from benchmarks import chaos


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 5)
    finally:
        writer.close()


async def test_the_proxy_forwards_cuts_every_connection_refuses_then_accepts_again() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = chaos.Proxy("127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        assert await _round_trip(proxy.port, b"before") == b"before"

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        assert await reader.read(1) == b"x"
        proxy.cut()
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # the open one is reset
        writer.close()
        with pytest.raises(OSError):  # and a new one is refused: the port is closed
            await _round_trip(proxy.port, b"during")

        await proxy.restore()
        assert await _round_trip(proxy.port, b"after") == b"after"  # same port again
        assert proxy.connections == 3
    finally:
        await proxy.stop()
        server.close()


async def test_without_a_postgresql_url_the_benchmark_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    assert await chaos.main(argparse.Namespace(seed=1, quick=True)) == 2
    assert "chaos needs PostgreSQL" in capsys.readouterr().err
