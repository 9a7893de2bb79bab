#!/usr/bin/env python3
"""tests/common/faultproxy.py: an HTTP proxy that breaks requests on purpose.

It stands in front of an S3 gateway and forwards each request unchanged
(the Host header too, so that signatures made for the proxy's address still
verify), except that it fails some of them:

  --mode random --p P   each request, with probability P: answered 503
                        SlowDown without reaching the gateway; or its
                        connection reset before any answer; or forwarded and
                        its answer cut off (reset) halfway through the body
                        (the three equally likely)
  --mode fail           every request answered 503 (an outage)
  --mode stall          every request read, never answered (a hung server:
                        the client's timeout must end it)
  --fail-path S         besides the mode: every request whose path holds S
                        answered 503 (one kind of object unreachable, e.g.
                        `/packs/`: data gone while cached metadata reads)

  --stall-file FILE     in any mode: before each request, if FILE holds a
                        regular expression (its first line), a request whose
                        "METHOD PATH" it matches is read, appended to
                        FILE.hits and never answered, so that a test can
                        kill -9 the client at that exact step (tests change
                        FILE between steps; an empty or absent FILE matches
                        nothing)

Prints its port on the first line of stdout once it listens, then serves
until killed (the tests stop it by PID). Python standard library only.

    python3 tests/common/faultproxy.py --upstream 127.0.0.1:8333 --mode random --p 0.2
"""

import argparse
import http.client
import http.server
import random
import re
import socket
import struct
import sys
import threading
import time

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>faultproxy: injected 503</Message></Error>"
)


def reset(sock):
    """Close with RST (SO_LINGER 0), as a dropped connection looks."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real S3 clients use it

    def log_message(self, fmt, *args):  # quiet: tests read stdout
        if self.server.verbose:
            sys.stderr.write("faultproxy: " + (fmt % args) + "\n")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return None
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_503(self):
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(SLOWDOWN)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(SLOWDOWN)

    def handle_any(self):
        srv = self.server
        body = self.read_body()
        if body is None:
            self.send_error(501, "chunked request bodies are not supported")
            return
        srv.count(self.command)
        if srv.stall_matches("%s %s" % (self.command, self.path)):
            while True:
                time.sleep(3600)
        if srv.mode == "fail" or (srv.fail_path and srv.fail_path in self.path):
            self.send_503()
            return
        if srv.mode == "stall":
            # Hold the connection open without a word until the client
            # gives up (or the proxy is killed).
            while True:
                time.sleep(3600)
        fault = None
        with srv.lock:
            if srv.rng.random() < srv.p:
                fault = srv.rng.choice(["503", "reset", "cut"])
        if fault == "503":
            self.send_503()
            return
        if fault == "reset":
            self.close_connection = True
            reset(self.connection)
            return
        up = http.client.HTTPConnection(srv.upstream_host, srv.upstream_port, timeout=60)
        try:
            up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in ("connection", "keep-alive", "proxy-connection"):
                    continue
                up.putheader(k, v)
            up.endheaders(body if body else None)
            resp = up.getresponse()
            data = resp.read()
        except OSError as e:
            self.send_error(502, "upstream: %s" % e)
            return
        finally:
            up.close()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                continue
            self.send_header(k, v)
        # The length of what the gateway answered (for HEAD: what it said).
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "cut" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            reset(self.connection)
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, args):
        super().__init__(addr, Handler)
        host, _, port = args.upstream.rpartition(":")
        self.upstream_host = host
        self.upstream_port = int(port)
        self.mode = args.mode
        self.p = args.p
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.verbose = args.verbose
        self.fail_path = args.fail_path
        self.requests = 0
        self.stall_file = args.stall_file

    def count(self, method):
        with self.lock:
            self.requests += 1

    def stall_matches(self, line):
        """True if --stall-file's pattern matches LINE (then recorded)."""
        if not self.stall_file:
            return False
        try:
            with open(self.stall_file) as f:
                pattern = f.readline().strip()
        except OSError:
            return False
        if not pattern or not re.search(pattern, line):
            return False
        with self.lock, open(self.stall_file + ".hits", "a") as hits:
            hits.write(line + "\n")
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the S3 gateway")
    ap.add_argument("--mode", choices=["random", "fail", "stall"], default="random")
    ap.add_argument("--p", type=float, default=0.2, help="fault probability (random mode)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--fail-path", default=None, help="answer 503 to requests whose path holds this")
    ap.add_argument("--port", type=int, default=0, help="listen port [default: a free one]")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--stall-file", default=None, help="hold requests matching the regex in this file")
    args = ap.parse_args()
    if not 0.0 <= args.p <= 1.0:
        ap.error("--p must be between 0 and 1")
    srv = Server(("127.0.0.1", args.port), args)
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
