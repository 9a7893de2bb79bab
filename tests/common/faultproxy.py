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
  --mode pass           every request forwarded unchanged, the answer streamed
                        back as it comes, over one kept-alive upstream
                        connection per client connection: with --log, a
                        neutral counter of any S3 client's requests and bytes
                        (scripts/bench.sh puts it in front of cbrfs and restic)

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

  --log FILE            (any mode) append one line per answered request:
                        METHOD KIND STATUS UP DOWN PATH, tab-separated; KIND
                        is LIST for a listing (a GET of a bucket or of its
                        multipart uploads or parts), else the method; UP and
                        DOWN are the body bytes of the request and of the
                        answer; PATH has no query (no signature is written).
                        The line is written before the answer's last bytes
                        are sent, so once a client has its answer the line is
                        in the file.
  --summary FILE        print the counts of a --log FILE (from byte --from
                        on) as `KEY<TAB>VALUE` lines and exit: requests, one
                        per KIND, up, down; with --match RE also put_match and
                        put_match_up, the PUTs whose PATH matches RE

Prints its port on the first line of stdout once it listens, then serves
until killed (the tests stop it by PID). Python standard library only.

    python3 tests/common/faultproxy.py --upstream 127.0.0.1:8333 --mode random --p 0.2
    python3 tests/common/faultproxy.py --upstream 127.0.0.1:8333 --mode pass --log req.log
    python3 tests/common/faultproxy.py --summary req.log --from 1234
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
import urllib.parse

# Request kinds the --log counts; LIST is a GET that lists (S3 bills it apart).
KINDS = ("GET", "PUT", "POST", "HEAD", "DELETE", "LIST")
# Query parameters that make a GET of a bucket a listing. A GET of a bucket
# with none of them (ListObjects v1 with no argument) lists too; one with
# another sub-resource (?location, ?versioning, ...) does not.
LIST_PARAMS = frozenset(
    ["list-type", "prefix", "delimiter", "marker", "continuation-token", "start-after",
     "max-keys", "uploads", "versions", "key-marker", "upload-id-marker"]
)
# Streamed answers are copied in pieces of this size.
CHUNK = 1 << 16

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


def kind_of(method, target):
    """The S3 request kind of METHOD on the request target (path-style:
    /BUCKET/KEY?QUERY): LIST for ListBuckets, ListObjects (v1, v2, versions),
    ListMultipartUploads and ListParts, else the method itself."""
    if method != "GET":
        return method
    path, _, query = target.partition("?")
    params = {k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "LIST"  # ListBuckets
    if key:
        return "LIST" if "uploadId" in params else "GET"  # ListParts
    if not params or params & LIST_PARAMS:
        return "LIST"
    return "GET"


def summarize(path, start=0, match=None):
    """Counts of a --log file from byte START on: a dict of requests, one
    count per KIND, up and down bytes (and put_match, put_match_up for the
    PUTs whose path matches the regex MATCH)."""
    out = {"requests": 0, "up": 0, "down": 0}
    for k in KINDS:
        out[k] = 0
    rx = re.compile(match) if match else None
    if rx:
        out["put_match"] = 0
        out["put_match_up"] = 0
    with open(path, "rb") as f:
        f.seek(start)
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # a line being written as we read: not yet a request
            fields = raw.decode("utf-8", "replace").rstrip("\n").split("\t")
            if len(fields) != 6:
                continue
            method, kind, _status, up, down, target = fields
            out["requests"] += 1
            out[kind] = out.get(kind, 0) + 1
            out["up"] += int(up)
            out["down"] += int(down)
            if rx and method == "PUT" and rx.search(target):
                out["put_match"] += 1
                out["put_match_up"] += int(up)
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real S3 clients use it
    # An answer goes out as two writes (headers, body): with Nagle's
    # algorithm the second waits for the client's delayed ACK, 40 ms a
    # request (measured: 46 ms against 4 ms without).
    disable_nagle_algorithm = True

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
            srv.log(self.command, self.path, 503, len(body), len(SLOWDOWN))
            self.send_503()
            return
        if srv.mode == "pass":
            self.forward_stream(body)
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
            srv.log(self.command, self.path, 503, len(body), len(SLOWDOWN))
            self.send_503()
            return
        if fault == "reset":
            srv.log(self.command, self.path, 0, len(body), 0)
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
        sent = len(data) // 2 if fault == "cut" and len(data) > 1 else len(data)
        srv.log(self.command, self.path, resp.status, len(body), 0 if self.command == "HEAD" else sent)
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

    def finish(self):
        super().finish()
        up = getattr(self, "_up", None)
        if up is not None:
            up.close()

    def upstream(self, fresh):
        """This client connection's kept-alive connection to the gateway
        (a new one when FRESH, or none yet)."""
        up = getattr(self, "_up", None)
        if fresh or up is None:
            if up is not None:
                up.close()
            srv = self.server
            up = http.client.HTTPConnection(srv.upstream_host, srv.upstream_port, timeout=300)
            self._up = up
        return up

    def forward_stream(self, body):
        """Pass mode: forward the request, stream the answer back."""
        srv = self.server
        resp = None
        # A kept-alive upstream connection the gateway has closed fails at
        # once: send once more on a new one (only then: a fresh connection's
        # failure is the gateway's answer).
        for fresh in (False, True):
            up = self.upstream(fresh)
            reused = up.sock is not None
            try:
                up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    # The body is here already: no 100-continue upstream.
                    if k.lower() in ("connection", "keep-alive", "proxy-connection", "expect"):
                        continue
                    up.putheader(k, v)
                up.endheaders(body if body else None)
                resp = up.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                up.close()
                if fresh or not reused:
                    self.send_error(502, "upstream: %s" % e)
                    return
            except OSError as e:
                up.close()
                self.send_error(502, "upstream: %s" % e)
                return
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                continue
            self.send_header(k, v)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        try:
            if no_body or length is None:
                # No body, or one of unknown length (chunked): read it whole
                # and answer with its length.
                data = b"" if no_body else resp.read()
                if no_body:
                    resp.read()
                if length is not None or not no_body:
                    self.send_header("Content-Length", length if no_body else str(len(data)))
                srv.log(self.command, self.path, resp.status, len(body), len(data))
                self.end_headers()
                if data:
                    self.wfile.write(data)
            else:
                n = int(length)
                self.send_header("Content-Length", str(n))
                if n == 0:
                    # The headers are the whole answer: log first.
                    srv.log(self.command, self.path, resp.status, len(body), 0)
                self.end_headers()
                # Hold back the last piece until the request is logged.
                left, held = n, b""
                while left > 0:
                    piece = resp.read(min(CHUNK, left))
                    if not piece:
                        raise ConnectionResetError("the gateway's answer ended early")
                    left -= len(piece)
                    if held:
                        self.wfile.write(held)
                    held = piece
                # Done with this answer (an empty one was never read): the
                # upstream connection takes the next request.
                resp.read()
                if n:
                    srv.log(self.command, self.path, resp.status, len(body), n)
                    self.wfile.write(held)
        except OSError:
            # The gateway or the client went away mid-answer: drop both
            # connections, as the client would see a cut answer anyway.
            up.close()
            self.close_connection = True
            reset(self.connection)
            return
        if resp.will_close:
            up.close()

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
        # Line-buffered appends: each request's line is in the file once
        # log() returns.
        self.logfile = open(args.log, "a", buffering=1, encoding="utf-8") if args.log else None
        self.stall_file = args.stall_file

    def count(self, method):
        with self.lock:
            self.requests += 1

    def log(self, method, target, status, up, down):
        """One --log line for an answered request."""
        if self.logfile is None:
            return
        path = target.partition("?")[0]
        line = "%s\t%s\t%d\t%d\t%d\t%s\n" % (method, kind_of(method, target), status, up, down, path)
        with self.lock:
            self.logfile.write(line)

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
    ap.add_argument("--upstream", help="HOST:PORT of the S3 gateway")
    ap.add_argument("--mode", choices=["random", "fail", "stall", "pass"], default="random")
    ap.add_argument("--p", type=float, default=0.2, help="fault probability (random mode)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--fail-path", default=None, help="answer 503 to requests whose path holds this")
    ap.add_argument("--port", type=int, default=0, help="listen port [default: a free one]")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--stall-file", default=None, help="hold requests matching the regex in this file")
    ap.add_argument("--log", metavar="FILE", help="append one line per request to FILE")
    ap.add_argument("--summary", metavar="FILE", help="print the counts of a --log FILE and exit")
    ap.add_argument("--from", dest="start", type=int, default=0, metavar="BYTES",
                    help="with --summary: count the lines from this offset on")
    ap.add_argument("--match", metavar="RE", help="with --summary: also count the PUTs whose path matches RE")
    args = ap.parse_args()
    if args.summary:
        for k, v in summarize(args.summary, args.start, args.match).items():
            print("%s\t%d" % (k, v))
        return
    if not args.upstream:
        ap.error("--upstream is required")
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
