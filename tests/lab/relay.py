"""A slow-metastore relay for the lab: a TCP relay on loopback in front of a Hive Metastore that
delays every call by a fixed time before forwarding it (the way a remote, loaded metastore
feels) and counts the calls that pass.

A call is one request message from the client. The relay walks each message to find where it
ends (a call may arrive in many TCP reads, and several calls in one), so the delay is applied
exactly once per call: when the call's first byte has arrived and before any of it is forwarded;
the call then streams through. Replies stream back untouched and are never parsed. Memory is
bounded per connection (64 KiB pieces; a long string is streamed, not held), connections are
served concurrently (asyncio).

Transports, detected from a connection's first bytes: unframed binary (strict, and the old
non-strict header), unframed compact, and framed (a frame of any protocol is one call). Anything
else (SASL, HTTP, garbage) closes that connection with a message on stderr and is counted in
`refused`: the counts stay exact.

CLI (the lab venv, or any Python 3.8+; nothing outside the standard library):

    python tests/lab/relay.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:9083 --delay-ms 20 \\
        [--control 127.0.0.1:CPORT]

prints "listening HOST:PORT" (and "control HOST:CPORT") on stdout once ready. The control port
takes one command per line and answers one line:
    calls     -> the number of calls forwarded so far
    methods   -> a JSON object {method name: calls}
    stats     -> a JSON object (calls, methods, connections, refused, delay_ms)
    reset     -> "ok"; the counts start again from zero
    delay MS  -> "ok"; the delay of calls from now on
From bash:  exec 3<>/dev/tcp/127.0.0.1/$CPORT; echo calls >&3; read -r n <&3
SIGTERM or SIGINT stops it cleanly (the final stats on stderr, exit 0). An unreachable upstream
at start exits 2 with a message naming it.

In-process (pytest): `with RelayThread(upstream_port, delay_ms=20) as r:` then r.port, r.calls,
r.methods, r.stats(), r.reset()."""
import argparse
import asyncio
import collections
import json
import signal
import socket
import struct
import sys
import threading

CHUNK = 64 * 1024  # bytes read or forwarded at once
MAX_DEPTH = 64  # nesting of structs and containers in a call
MAX_NAME = 4096  # bytes of a method name

# binary protocol types and the fixed sizes of the scalar ones
B_STOP, B_STRING, B_STRUCT, B_MAP, B_SET, B_LIST = 0, 11, 12, 13, 14, 15
B_FIXED = {2: 1, 3: 1, 4: 8, 6: 2, 8: 4, 10: 8}  # bool, byte, double, i16, i32, i64
# compact protocol types
C_STOP, C_TRUE, C_FALSE, C_BYTE, C_I16, C_I32, C_I64, C_DOUBLE = 0, 1, 2, 3, 4, 5, 6, 7
C_BINARY, C_LIST, C_SET, C_MAP, C_STRUCT = 8, 9, 10, 11, 12
CALL, ONEWAY = 1, 4


class Malformed(Exception):
    """The client's bytes are not a call the relay can walk."""


class Closed(Exception):
    """The client closed its side (at a message boundary: `clean`)."""

    def __init__(self, clean):
        super().__init__("client closed" + ("" if clean else " mid-call"))
        self.clean = clean


class Cursor:
    """The client's byte stream: walked with need/take/skip; what was walked is forwarded to
    the upstream by flush() (and automatically once CHUNK bytes are pending)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.pos = 0  # walked up to here; buf[:pos] is waiting to be forwarded

    async def need(self, n, at_boundary=False):
        while len(self.buf) - self.pos < n:
            if self.pos >= CHUNK:
                await self.flush()
            data = await self.reader.read(CHUNK)
            if not data:
                raise Closed(at_boundary and len(self.buf) == self.pos)
            self.buf += data

    async def take(self, n):
        await self.need(n)
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    async def skip(self, n):
        """Walks N bytes, forwarding as it goes (N may be far larger than memory allows)."""
        while n > 0:
            if self.pos == len(self.buf):
                await self.need(1)
            k = min(n, len(self.buf) - self.pos)
            self.pos += k
            n -= k
            if self.pos >= CHUNK:
                await self.flush()

    async def flush(self):
        if self.pos:
            self.writer.write(bytes(self.buf[:self.pos]))
            del self.buf[:self.pos]
            self.pos = 0
            await self.writer.drain()

    def peek(self, n):
        return bytes(self.buf[self.pos:self.pos + n])


# ---------------------------------------------------------------------------------------------
# binary protocol


async def b_i32(c):
    return struct.unpack(">i", await c.take(4))[0]


async def b_value(c, t, depth):
    if depth > MAX_DEPTH:
        raise Malformed(f"nesting deeper than {MAX_DEPTH}")
    if t in B_FIXED:
        await c.skip(B_FIXED[t])
    elif t == B_STRING:
        n = await b_i32(c)
        if n < 0:
            raise Malformed(f"negative string length {n}")
        await c.skip(n)
    elif t == B_STRUCT:
        while True:
            ft = (await c.take(1))[0]
            if ft == B_STOP:
                return
            await c.skip(2)
            await b_value(c, ft, depth + 1)
    elif t == B_MAP:
        kt, vt = await c.take(2)
        n = await b_i32(c)
        if n < 0:
            raise Malformed(f"negative map size {n}")
        for _ in range(n):
            await b_value(c, kt, depth + 1)
            await b_value(c, vt, depth + 1)
    elif t in (B_SET, B_LIST):
        et = (await c.take(1))[0]
        n = await b_i32(c)
        if n < 0:
            raise Malformed(f"negative list size {n}")
        for _ in range(n):
            await b_value(c, et, depth + 1)
    else:
        raise Malformed(f"unknown binary type {t}")


async def b_message(c):
    """Walks one binary message; its method name."""
    first = await b_i32(c)
    if first < 0:  # strict: 0x8001 version, type in the low byte
        if (first >> 16) & 0xFFFF != 0x8001:
            raise Malformed(f"binary version {first >> 16 & 0xFFFF:#x}")
        mtype = first & 0xFF
        n = await b_i32(c)
        if not 0 <= n <= MAX_NAME:
            raise Malformed(f"method name of {n} bytes")
        name = await c.take(n)
    else:  # old non-strict header: name, type byte
        if first > MAX_NAME:
            raise Malformed(f"method name of {first} bytes")
        name = await c.take(first)
        mtype = (await c.take(1))[0]
    if mtype not in (CALL, ONEWAY):
        raise Malformed(f"message type {mtype} from a client")
    await c.skip(4)  # seqid
    await b_value(c, B_STRUCT, 0)
    return name.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# compact protocol


async def c_varint(c):
    shift = result = 0
    for _ in range(10):
        b = (await c.take(1))[0]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result
        shift += 7
    raise Malformed("varint longer than 10 bytes")


async def c_value(c, t, depth, in_field=False):
    if depth > MAX_DEPTH:
        raise Malformed(f"nesting deeper than {MAX_DEPTH}")
    if t in (C_TRUE, C_FALSE):
        if not in_field:  # a bool element is one byte; a bool field is its header
            await c.skip(1)
    elif t == C_BYTE:
        await c.skip(1)
    elif t in (C_I16, C_I32, C_I64):
        await c_varint(c)
    elif t == C_DOUBLE:
        await c.skip(8)
    elif t == C_BINARY:
        await c.skip(await c_varint(c))
    elif t == C_STRUCT:
        while True:
            h = (await c.take(1))[0]
            ft = h & 0x0F
            if ft == C_STOP:
                return
            if h >> 4 == 0:
                await c_varint(c)  # field id, zigzag
            await c_value(c, ft, depth + 1, in_field=True)
    elif t in (C_LIST, C_SET):
        h = (await c.take(1))[0]
        n = h >> 4
        if n == 15:
            n = await c_varint(c)
        for _ in range(n):
            await c_value(c, h & 0x0F, depth + 1)
    elif t == C_MAP:
        n = await c_varint(c)
        if n:
            kv = (await c.take(1))[0]
            for _ in range(n):
                await c_value(c, kv >> 4, depth + 1)
                await c_value(c, kv & 0x0F, depth + 1)
    else:
        raise Malformed(f"unknown compact type {t}")


async def c_message(c):
    """Walks one compact message; its method name."""
    proto, tv = await c.take(2)
    if proto != 0x82 or tv & 0x1F != 1:
        raise Malformed(f"compact header {proto:#x} {tv:#x}")
    if tv >> 5 not in (CALL, ONEWAY):
        raise Malformed(f"message type {tv >> 5} from a client")
    await c_varint(c)  # seqid
    n = await c_varint(c)
    if n > MAX_NAME:
        raise Malformed(f"method name of {n} bytes")
    name = await c.take(n)
    await c_value(c, C_STRUCT, 0)
    return name.decode("utf-8", "replace")


def frame_name(head):
    """The method name at the start of a frame's payload (binary or compact), or "?"."""
    try:
        if head[:2] == b"\x80\x01":
            n = struct.unpack(">i", head[4:8])[0]
            return head[8:8 + n].decode("utf-8", "replace") if 0 <= n <= MAX_NAME else "?"
        if head[:1] == b"\x82":
            i, shift, n = 2, 0, 0
            while head[i] & 0x80:  # seqid
                i += 1
            i += 1
            while True:
                b = head[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            return head[i:i + n].decode("utf-8", "replace")
    except (IndexError, struct.error):
        pass
    return "?"


async def detect(c):
    """The connection's transport from its first bytes: "binary", "compact" or "framed"."""
    await c.need(1, at_boundary=True)
    b0 = c.peek(1)[0]
    if b0 == 0x80:
        return "binary"
    if b0 == 0x82:
        return "compact"
    await c.need(5)
    head = c.peek(5)
    n = struct.unpack(">i", head[:4])[0]
    if n > 0 and head[4] in (0x80, 0x82):
        return "framed"
    if 0 < n <= MAX_NAME and head[4] >= 0x20:  # old non-strict binary: a name's first char
        return "binary"
    raise Malformed(f"unknown transport (first bytes {bytes(c.peek(8)).hex()})")


# ---------------------------------------------------------------------------------------------
# the relay


class Relay:
    """The relay on an asyncio loop: start() then serve until close()."""

    def __init__(self, upstream, listen=("127.0.0.1", 0), delay_ms=20.0, log=None):
        self.upstream = upstream
        self.listen = listen
        self.delay = delay_ms / 1000.0
        self.log = log or (lambda s: print(f"relay.py: {s}", file=sys.stderr, flush=True))
        self.calls = 0
        self.methods = collections.Counter()
        self.connections = 0
        self.refused = 0
        self.server = None
        self.control = None
        self._conns = set()

    @property
    def port(self):
        return self.server.sockets[0].getsockname()[1]

    def stats(self):
        return {"calls": self.calls, "methods": dict(self.methods),
                "connections": self.connections, "refused": self.refused,
                "delay_ms": self.delay * 1000.0}

    def reset(self):
        self.calls = 0
        self.methods = collections.Counter()
        self.refused = 0

    async def start(self, control=None):
        self.server = await asyncio.start_server(self._serve, *self.listen)
        if control:
            self.control = await asyncio.start_server(self._control, *control)
        return self

    async def close(self):
        for s in (self.server, self.control):
            if s is not None:
                s.close()
        for t in list(self._conns):
            t.cancel()
        for s in (self.server, self.control):
            if s is not None:
                await s.wait_closed()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)

    async def _control(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.decode("utf-8", "replace").split()
                if not cmd:
                    continue
                if cmd == ["calls"]:
                    out = str(self.calls)
                elif cmd == ["methods"]:
                    out = json.dumps(dict(self.methods))
                elif cmd == ["stats"]:
                    out = json.dumps(self.stats())
                elif cmd == ["reset"]:
                    self.reset()
                    out = "ok"
                elif len(cmd) == 2 and cmd[0] == "delay":
                    try:
                        ms = float(cmd[1])
                        if not 0 <= ms <= 600_000:
                            raise ValueError
                        self.delay = ms / 1000.0
                        out = "ok"
                    except ValueError:
                        out = f"error: delay {cmd[1]!r} is not 0..600000 ms"
                else:
                    out = f"error: unknown command {' '.join(cmd)[:80]!r}"
                writer.write(out.encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, creader, cwriter):
        task = asyncio.current_task()
        self._conns.add(task)
        self.connections += 1
        peer = cwriter.get_extra_info("peername")
        uwriter = None
        try:
            try:
                ureader, uwriter = await asyncio.open_connection(*self.upstream)
            except OSError as e:
                self.log(f"{peer}: metastore {self.upstream[0]}:{self.upstream[1]} "
                         f"unreachable: {e}; connection closed")
                return
            for w in (cwriter, uwriter):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            back = asyncio.ensure_future(self._pump(ureader, cwriter))
            try:
                await self._calls(creader, uwriter)
                # The client is done sending: let the metastore finish its replies.
                if uwriter.can_write_eof():
                    uwriter.write_eof()
                await back
            finally:
                back.cancel()
                await asyncio.gather(back, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        except Malformed as e:
            self.refused += 1
            self.log(f"{peer}: {e}; connection closed")
        except (ConnectionError, OSError) as e:
            self.log(f"{peer}: {type(e).__name__}: {e}")
        finally:
            for w in (cwriter, uwriter):
                if w is not None:
                    w.close()
            self.connections -= 1
            self._conns.discard(task)

    async def _pump(self, reader, writer):
        """The metastore's replies, streamed back untouched."""
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except (ConnectionError, OSError):
                    pass

    async def _calls(self, creader, uwriter):
        c = Cursor(creader, uwriter)
        try:
            kind = await detect(c)
            while True:
                await c.need(1, at_boundary=True)  # the next call has begun
                await c.flush()  # nothing of it is forwarded before its delay
                if self.delay:
                    await asyncio.sleep(self.delay)
                if kind == "framed":
                    await c.need(4)
                    n = struct.unpack(">i", c.peek(4))[0]
                    if n <= 0:
                        raise Malformed(f"frame of {n} bytes")
                    await c.need(min(n, 8 + MAX_NAME) + 4)  # enough for the name
                    name = frame_name(c.peek(4 + min(n, 8 + MAX_NAME))[4:])
                    await c.skip(4 + n)
                elif kind == "compact":
                    name = await c_message(c)
                else:
                    name = await b_message(c)
                await c.flush()
                self.calls += 1
                self.methods[name] += 1
        except Closed as e:
            if not e.clean:
                self.log("client closed mid-call")


class RelayThread:
    """A Relay on its own event loop in a daemon thread, for tests:
    `with RelayThread(upstream_port, delay_ms=20) as r:` (r.port, r.calls, r.methods)."""

    def __init__(self, upstream_port, delay_ms=20.0, upstream_host="127.0.0.1"):
        self.relay = Relay((upstream_host, upstream_port), delay_ms=delay_ms)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.relay.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.relay.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, fn):
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def port(self):
        return self.relay.port

    @property
    def calls(self):
        return self._call(lambda: self.relay.calls)

    @property
    def methods(self):
        return self._call(lambda: dict(self.relay.methods))

    def stats(self):
        return self._call(self.relay.stats)

    def reset(self):
        self._call(self.relay.reset)


def hostport(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{s!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def amain(a):
    try:
        socket.create_connection(a.upstream, timeout=10).close()
    except OSError as e:
        print(f"relay.py: metastore {a.upstream[0]}:{a.upstream[1]} unreachable: {e}",
              file=sys.stderr)
        return 2
    relay = Relay(a.upstream, a.listen, a.delay_ms)
    try:
        await relay.start(a.control)
    except OSError as e:
        print(f"relay.py: cannot listen: {e}", file=sys.stderr)
        return 1
    h, p = relay.server.sockets[0].getsockname()[:2]
    print(f"listening {h}:{p}", flush=True)
    if relay.control:
        h, p = relay.control.sockets[0].getsockname()[:2]
        print(f"control {h}:{p}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await relay.close()
    print(f"relay.py: stopped; {json.dumps(relay.stats())}", file=sys.stderr)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=hostport, default=("127.0.0.1", 0), metavar="HOST:PORT")
    ap.add_argument("--upstream", type=hostport, required=True, metavar="HOST:PORT")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--control", type=hostport, metavar="HOST:PORT",
                    help="line-based control port (calls, methods, stats, reset, delay MS)")
    a = ap.parse_args(argv)
    if not 0 <= a.delay_ms <= 600_000:
        ap.error("--delay-ms must be 0..600000")
    return asyncio.run(amain(a))


if __name__ == "__main__":
    sys.exit(main())
