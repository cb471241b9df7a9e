"""Server security: authentication at the handshake, connection caps, Host/Origin checks, HTTP pages, TLS.

Each test here failed on the server before these checks existed (issue 13).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from server_harness import start_serve as serve_process
from server_harness import (
    http_request,
    make_certificate,
    raw_session,
    recv_until_close,
    run,
    running_server,
    silence,
    synth,
    toy_recognizer,
    upgrade_headers,
)

pytestmark = pytest.mark.timeout(180)

TOKEN = "s3cret"
GOOD = np.concatenate([synth("still fine"), silence(0.3)])


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


def auth_subprotocols(token: str) -> list[str]:
    return ["wavstream.v1", "wavstream.auth." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")]


async def probe(url: str, **connect_kw) -> str:
    """Connect, send a start, return what happened: 'ready', an error code, or 'http <status>'."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    try:
        ws = await connect(url, open_timeout=5, **connect_kw)
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}"
    try:
        try:
            await ws.send(json.dumps({"type": "start"}))
        except ConnectionClosed:
            pass  # refused before the start was read: its error message is still queued
        m = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return "ready" if m["type"] == "ready" else m.get("code", m["type"])
    except ConnectionClosed:
        return "closed"
    finally:
        await ws.close()


async def leak_bad_version(port: int) -> None:
    """A handshake with the right token that the websocket layer refuses after process_request (version 8)."""
    st, _, _ = await http_request(port, headers=upgrade_headers(Sec_WebSocket_Version="8", Authorization=f"Bearer {TOKEN}"))
    assert st in (400, 426)


async def leak_reset(port: int) -> None:
    """The right token, then a TCP reset before the handshake completes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in upgrade_headers(Authorization=f"Bearer {TOKEN}").items())
    writer.write(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}\r\n".encode())
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    writer.transport.abort()


def test_token_cannot_be_borrowed_from_a_leaked_connection(rec) -> None:
    """Issue 13 item 1: connections with the right token that fail the handshake, reset, or are refused
    (server_full) leave nothing behind: afterwards 0 of 400 token-less clients get `ready`."""
    n_leak, n_probe = 300, 400

    async def go():
        results = {}
        async with running_server(rec, token=TOKEN, max_sessions=1) as server:
            port = server.port
            for variant in ("bad_version", "reset", "server_full"):
                if variant == "server_full":  # one authorised session holds the only slot
                    holder = await raw_session(server.url, {}, additional_headers={"Authorization": f"Bearer {TOKEN}"})
                    refused = [await probe(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
                               for _ in range(n_leak)]
                    results["refused"] = set(refused)
                    await holder.close()
                else:
                    for i in range(0, n_leak, 50):
                        await asyncio.gather(*((leak_bad_version if variant == "bad_version" else leak_reset)(port)
                                               for _ in range(50)))
                await asyncio.sleep(0.3)  # let the server drop those connections
                got = [await probe(server.url) for _ in range(n_probe)]
                results[variant] = got.count("ready"), set(got)
            await asyncio.sleep(0.2)
            left = (server.stats()["connections"], len(getattr(server, "_authed", ())))
            after = await probe(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        return results, left, after

    results, left, after = run(go(), timeout=150)
    assert results.pop("refused") == {"server_full"}
    assert {v: r[0] for v, r in results.items()} == {"bad_version": 0, "reset": 0, "server_full": 0}, results
    assert all(r[1] == {"http 401"} for r in results.values()), results  # refused at the handshake
    assert left == (0, 0)  # no per-connection state survives its connection
    assert after == "ready"


def test_tokenless_connections_hold_no_session_slot(rec) -> None:
    """Item 2: with a token set, token-less sockets are refused at the handshake (401), so however many
    there are, an authorised client still gets one of the max_sessions slots."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def go():
        async with running_server(rec, token=TOKEN, max_sessions=1) as server:
            statuses = []
            for _ in range(5):
                try:
                    _left_open = await connect(server.url)
                    statuses.append("open")
                    await asyncio.sleep(0)  # left open, as an attacker would
                except InvalidStatus as exc:
                    statuses.append(exc.response.status_code)
            header = await probe(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
            sub = await probe(server.url, subprotocols=auth_subprotocols(TOKEN))
            wrong_sub = await probe(server.url, subprotocols=auth_subprotocols("nope"))
            in_url = await probe(server.url + f"/?token={TOKEN}")
            start_field = await probe(server.url)  # a token only in the start message is not read
            return statuses, header, sub, wrong_sub, in_url, start_field

    statuses, header, sub, wrong_sub, in_url, start_field = run(go())
    assert statuses == [401] * 5
    assert header == "ready" and sub == "ready"
    assert wrong_sub == "http 401" and in_url == "http 401" and start_field == "http 401"


def test_subprotocol_answer_never_echoes_the_token(rec) -> None:
    async def go():
        async with running_server(rec, token=TOKEN) as server:
            ws = await raw_session(server.url, {}, subprotocols=auth_subprotocols(TOKEN))
            chosen = ws.subprotocol
            await ws.close()
            return chosen

    assert run(go()) == "wavstream.v1"


def test_unstarted_connections_have_their_own_cap_and_a_short_timeout(rec) -> None:
    """Item 2: connections that never send `start` neither take session slots nor stay long; past
    max_pending more are closed at once."""
    from websockets.asyncio.client import connect

    async def go():
        async with running_server(rec, max_sessions=2, max_pending=4, start_timeout_s=0.5) as server:
            idle = [await connect(server.url) for _ in range(4)]
            await asyncio.sleep(0.05)
            try:  # the fifth unstarted connection is over the cap
                extra = await connect(server.url, open_timeout=2)
                await extra.recv()
                fifth = "served"
            except Exception as exc:  # noqa: BLE001 - any refusal will do
                fifth = type(exc).__name__
            # the idle sockets take no session slot: two clients still start (after the idle ones time out
            # only pending room is needed for their handshakes)
            t0 = time.monotonic()
            closed = await asyncio.gather(*(recv_until_close(ws, timeout=5) for ws in idle))
            waited = time.monotonic() - t0
            a = await probe(server.url)
            b1 = await raw_session(server.url, {})
            b2 = await raw_session(server.url, {})
            third = await probe(server.url)
            await b1.close()
            await b2.close()
            return fifth, closed, waited, a, third

    fifth, closed, waited, a, third = run(go())
    assert fifth != "served"
    assert all(msgs and msgs[-1]["code"] == "idle_timeout" for msgs, _ in closed), closed
    assert waited < 2.0
    assert a == "ready" and third == "server_full"


def test_started_sessions_are_not_blocked_by_idle_unstarted_ones(rec) -> None:
    from websockets.asyncio.client import connect

    async def go():
        async with running_server(rec, max_sessions=1, max_pending=8, start_timeout_s=5) as server:
            idle = [await connect(server.url) for _ in range(6)]
            got = await probe(server.url)
            for ws in idle:
                await ws.close()
            return got

    assert run(go()) == "ready"


# ------------------------------------------------------------------ processes
def start_serve(bundle: Path, *extra: str, nofile: tuple[int, int] | None = None, env: dict | None = None):
    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return serve_process(["--model", str(bundle), "--port", "0", "--threads", "1", *extra], preexec_fn=limit, env=env)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def test_serve_raises_the_open_file_limit(rec) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the child starts with soft < hard (lowering is always allowed), whatever this machine's hard limit
    top = 512 if hard == resource.RLIM_INFINITY else min(512, hard)
    proc, _ = start_serve(rec.bundle.path, nofile=(top // 2, top))
    try:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        stop(proc)
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3:5] == [str(top), str(top)], line


def test_half_open_flood_logs_no_tracebacks_and_recovers(rec) -> None:
    """Item 2: with RLIMIT_NOFILE at 256 (soft = hard, so it cannot be raised), 400 TCP connections
    that never send a byte: no traceback in the log, and once they go the server serves again."""
    proc, url = start_serve(rec.bundle.path, "--max-pending", "64", nofile=(256, 256))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    socks = []
    try:
        for _ in range(400):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
            except OSError:
                pass
        time.sleep(2.0)
        for s in socks:
            s.close()
        time.sleep(0.5)
        got = run(probe(url))
    finally:
        err = stop(proc)
    assert len(socks) > 300
    assert "Traceback" not in err, err[:3000]
    assert got == "ready"


def test_serve_help_does_not_print_the_token() -> None:
    env = {**os.environ, "WAVSTREAM_TOKEN": "topsecret-value"}
    out = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "serve", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0
    assert "topsecret-value" not in out.stdout + out.stderr
    assert "WAVSTREAM_TOKEN" in out.stdout


# ------------------------------------------------------------- Host and Origin
def test_host_allow_list_stops_dns_rebinding(rec) -> None:
    """Item 3: a page on evil.example that rebinds its name to 127.0.0.1 sends Origin == Host ==
    evil.example:port; the Host check refuses it (pages and websocket), loopback names pass."""

    async def go(**opts):
        async with running_server(rec, **opts) as server:
            p = server.port
            out = {}
            for host in (f"evil.example:{p}", f"localhost:{p}", f"127.0.0.1:{p}", f"[::1]:{p}", f"app.localhost:{p}",
                         f"wavstream.test:{p}", f"192.168.1.7:{p}"):
                ws, _, _ = await http_request(p, headers=upgrade_headers(Origin=f"http://{host}"), host=host)
                page, _, _ = await http_request(p, "GET", "/stats", host=host)
                out[host.rsplit(":", 1)[0]] = (ws, page)
            return out

    default = run(go())
    assert default["evil.example"] == (403, 403)
    assert default["wavstream.test"] == (403, 403)
    for h in ("localhost", "127.0.0.1", "[::1]", "app.localhost", "192.168.1.7"):  # IP literals cannot be rebound
        assert default[h] == (101, 200), (h, default[h])
    listed = run(go(allowed_hosts=["wavstream.test"]))
    assert listed["wavstream.test"] == (101, 200) and listed["evil.example"] == (403, 403)


def test_allow_origin_adds_to_the_servers_own_page(rec) -> None:
    """Item 10: --allow-origin X keeps this server's own page working."""

    async def go():
        async with running_server(rec, allowed_origins=["http://other.example"]) as server:
            own = await probe(server.url, origin=f"http://127.0.0.1:{server.port}")
            other = await probe(server.url, origin="http://other.example")
            evil = await probe(server.url, origin="http://evil.example")
            return own, other, evil

    assert run(go()) == ("ready", "ready", "http 403")


# ------------------------------------------------------------------ HTTP pages
def test_stats_needs_the_token_and_hides_the_model_path(rec) -> None:
    """Item 5: /stats is behind the token when one is set and never shows an absolute path."""

    async def go():
        async with running_server(rec, token=TOKEN) as server:
            p = server.port
            anon = await http_request(p, "GET", "/stats")
            authed = await http_request(p, "GET", "/stats", {"Authorization": f"Bearer {TOKEN}"})
            health = await http_request(p, "GET", "/healthz")
            page = await http_request(p, "GET", "/")
            return anon, authed, health, page

    anon, authed, health, page = run(go())
    assert anon[0] == 401 and "bearer" in anon[1].get("www-authenticate", "").lower()
    assert authed[0] == 200
    stats = json.loads(authed[2])
    assert str(rec.bundle.path) not in authed[2].decode() and "/" not in stats["model"]["name"]
    assert health[0] == 200 and page[0] == 200  # liveness and the page need no token


def test_http_methods(rec) -> None:
    """Item 5: GET serves pages; HEAD gets the headers and no body; anything else 405."""

    async def go():
        async with running_server(rec) as server:
            p = server.port
            return {m: await http_request(p, m, path) for m, path in
                    (("GET", "/"), ("HEAD", "/"), ("POST", "/"), ("PUT", "/stats"), ("DELETE", "/healthz"), ("OPTIONS", "/"))}

    r = run(go())
    assert r["GET"][0] == 200 and r["GET"][2].startswith(b"<!doctype html>")
    assert r["HEAD"][0] == 200 and r["HEAD"][1]["content-length"] == str(len(r["GET"][2]))
    for m in ("POST", "PUT", "DELETE", "OPTIONS"):
        assert r[m][0] == 405 and r[m][1]["allow"] == "GET, HEAD", (m, r[m])


def test_http_head_sends_no_body(rec) -> None:
    """A HEAD response followed by nothing: the next bytes on the socket would be a body."""

    async def go():
        async with running_server(rec) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), 5)  # the server closes after the response
            writer.close()
            return data

    data = run(go())
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest == b""


# ------------------------------------------------------------------------- TLS
def test_tls_wss_and_https(rec, tmp_path: Path) -> None:
    """Item 6: Server(ssl_context=...) speaks wss and https; a plain ws client gets nothing."""
    from websockets.asyncio.client import connect

    from wavstream.stream.server import tls_context

    cert, key = make_certificate(tmp_path)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    pcm = np.clip(GOOD * 32768, -32768, 32767).astype("<i2").tobytes()

    async def go():
        async with running_server(rec, ssl_context=tls_context(cert, key)) as server:
            url = server.url
            ws = await connect(url, ssl=client_ctx)
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(pcm)
            await ws.send(json.dumps({"type": "end"}))
            msgs, code = await recv_until_close(ws)
            health = await http_request(server.port, "GET", "/healthz", ssl=client_ctx)
            try:
                await connect(url.replace("wss://", "ws://"), open_timeout=2)
                plain = "open"
            except Exception as exc:  # noqa: BLE001
                plain = type(exc).__name__
            return url, msgs, code, health, plain

    url, msgs, code, health, plain = run(go())
    assert url.startswith("wss://127.0.0.1:")
    assert [m["text"] for m in msgs if m["type"] == "final"] == ["still fine"] and code == 1000
    assert health[0] == 200 and json.loads(health[2])["ok"] is True
    assert plain != "open"


def test_serve_certfile_keyfile(rec, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    proc, url = start_serve(rec.bundle.path, "--certfile", str(cert), "--keyfile", str(key))
    try:
        got = run(probe(url, ssl=ssl.create_default_context(cafile=str(cert))))
    finally:
        stop(proc)
    assert url.startswith("wss://") and got == "ready"
    bad = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "serve", "--model", str(rec.bundle.path),
                          "--certfile", str(cert)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--keyfile" in bad.stderr and "Traceback" not in bad.stderr
