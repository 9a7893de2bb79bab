#!/usr/bin/env bash
# tests/faultproxy_count.sh: the counting pass-through of
# tests/common/faultproxy.py (`--mode pass --log`), which scripts/bench.sh
# puts between cbrfs or restic and the S3 gateway to count requests and
# bytes per operation. A known set of requests through it, against a stub
# gateway written here (no cluster needed):
# - the counts per kind (GET, PUT, POST, HEAD, DELETE, and LIST for the
#   listings: of buckets, objects, multipart uploads, parts) and the body
#   bytes up and down are exact;
# - each request is in the log as soon as its client has the answer (the
#   bench reads the log right after a command ends);
# - answers pass unchanged: a 300 kB body streamed in pieces, a chunked one,
#   a HEAD's length; a kept-alive upstream connection the gateway dropped is
#   replaced without the client seeing it;
# - no query (so no signature of a presigned request) is written;
# - the fault modes log what they answer (`--mode fail`: every 503).
. "$(dirname "$0")/lib.sh"

PROXY_PY=$TESTS/common/faultproxy.py

# ---- the stub gateway ----
cat >"$T/stub.py" <<'EOF'
"""A stub S3 gateway: answers by path, keeps connections alive (HTTP/1.1)."""
import http.server, sys, urllib.parse

def body_of(n):
    return bytes((i * 7 + 3) % 251 for i in range(n))

LISTING = b'<?xml version="1.0"?><ListBucketResult><Name>b</Name></ListBucketResult>'

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms stall per answer (see below)
    def log_message(self, *a):
        pass
    def answer(self, status, data, close=False):
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if close:
            # Drop the connection without saying so (no Connection: close),
            # as a gateway's idle timeout does.
            self.close_connection = True
    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(200, b"")
    do_POST = do_PUT
    def do_DELETE(self):
        self.send_response(204)
        self.end_headers()
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "777")
        self.end_headers()
    def do_GET(self):
        path, _, query = self.path.partition("?")
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if path.endswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"a" * 10, b"b" * 20, b"c" * 40):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if "size" in q:
            self.answer(200, body_of(int(q["size"])), close=path.endswith("/close-after"))
        else:
            self.answer(200, LISTING)

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
EOF

bg python3 "$T/stub.py" >"$T/stub.port"
wait_for 10 "the stub gateway to listen" test -s "$T/stub.port" || exit 1
STUB=127.0.0.1:$(head -n 1 "$T/stub.port")

bg python3 "$PROXY_PY" --upstream "$STUB" --mode pass --log "$T/req.log" >"$T/proxy.port"
wait_for 10 "the counting proxy to listen" test -s "$T/proxy.port" || exit 1
PORT=$(head -n 1 "$T/proxy.port")

# ---- the client: known requests, expected counts ----
cat >"$T/client.py" <<'EOF'
"""Send known requests through the proxy on one kept-alive connection;
after each, the proxy's log must already hold its line. Prints the expected
totals as KEY<TAB>VALUE lines; exits 1 (saying why) on a wrong answer."""
import http.client, sys

port, log = int(sys.argv[1]), sys.argv[2]

def body_of(n):
    return bytes((i * 7 + 3) % 251 for i in range(n))

# (method, target, request body size, kind, expected answer body or None)
REQS = [
    ("PUT", "/b/packs/ab/1.pack", 100000, "PUT", b""),
    ("PUT", "/b/index/1.idx", 1000, "PUT", b""),
    ("POST", "/b/packs/cd/2.pack?uploads", 0, "POST", b""),
    ("PUT", "/b/packs/cd/2.pack?partNumber=1&uploadId=x", 5000, "PUT", b""),
    ("POST", "/b/packs/cd/2.pack?uploadId=x", 300, "POST", b""),
    ("GET", "/b/big?size=300000", 0, "GET", body_of(300000)),
    ("GET", "/b/small?size=10&X-Amz-Signature=sekrit0123", 0, "GET", body_of(10)),
    ("GET", "/b?list-type=2&prefix=index/", 0, "LIST", None),
    ("GET", "/b/", 0, "LIST", None),
    ("GET", "/b/?location=", 0, "GET", None),
    ("GET", "/b/packs/cd/2.pack?uploadId=x", 0, "LIST", None),
    ("GET", "/b?uploads", 0, "LIST", None),
    ("GET", "/", 0, "LIST", None),
    ("HEAD", "/b/big", 0, "HEAD", b""),
    ("DELETE", "/b/big", 0, "DELETE", b""),
    # The stub drops this connection after answering: the next request
    # reaches it on a new upstream connection, unseen by the client.
    ("GET", "/b/close-after?size=50", 0, "GET", body_of(50)),
    ("GET", "/b/chunked", 0, "GET", b"a" * 10 + b"b" * 20 + b"c" * 40),
    ("GET", "/b/last?size=65537", 0, "GET", body_of(65537)),
]

want = {"requests": 0, "up": 0, "down": 0, "put_match": 0, "put_match_up": 0}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i, (method, target, n, kind, expect) in enumerate(REQS, 1):
    body = body_of(n) if n else None
    conn.request(method, target, body=body, headers={"Host": "s3.example:9000"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status // 100 != 2:
        sys.exit("%s %s: status %d" % (method, target, resp.status))
    if expect is not None and data != expect:
        sys.exit("%s %s: the answer differs from the gateway's (%d bytes, %d expected)"
                 % (method, target, len(data), len(expect)))
    if method == "HEAD" and resp.getheader("Content-Length") != "777":
        sys.exit("HEAD: Content-Length %s, the gateway said 777" % resp.getheader("Content-Length"))
    want["requests"] += 1
    want[kind] = want.get(kind, 0) + 1
    want["up"] += n
    want["down"] += len(data)
    if method == "PUT" and "/packs/" in target:
        want["put_match"] += 1
        want["put_match_up"] += n
    # Read at once, in this process: the line must already be there.
    with open(log, "rb") as f:
        got = f.read().count(b"\n")
    if got != i:
        sys.exit("after request %d (%s %s) the log counts %d requests" % (i, method, target, got))
for k, v in sorted(want.items()):
    print("%s\t%d" % (k, v))
EOF

if python3 "$T/client.py" "$PORT" "$T/req.log" >"$T/want" 2>"$T/client.err"; then
	pass "18 requests through the pass proxy: answers unchanged (streamed, chunked, HEAD, a dropped upstream connection), each logged before its client had the answer"
else
	fail "the client through the pass proxy: $(cat "$T/client.err")"
fi

python3 "$PROXY_PY" --summary "$T/req.log" --match /packs/ >"$T/got" || fail "faultproxy.py --summary failed"
get() { awk -F'\t' -v k="$2" '$1 == k {print $2}' "$1"; }
# The exact figures, written out (not only the client's own sums): a
# miscount on both sides must not pass.
for kv in requests=18 GET=6 LIST=5 PUT=3 POST=2 HEAD=1 DELETE=1 \
	up=106300 down=366099 put_match=2 put_match_up=105000; do
	k=${kv%%=*}
	expect_eq "count $k" "$(get "$T/got" "$k")" "${kv#*=}"
	expect_eq "count $k (the client's)" "$(get "$T/want" "$k")" "${kv#*=}"
done

# Counting from an offset: the bench counts each step from the log's size
# before it.
half=$(head -n 9 "$T/req.log" | wc -c)
python3 "$PROXY_PY" --summary "$T/req.log" --from "$half" >"$T/tail"
expect_eq "requests counted from the 10th line on" "$(get "$T/tail" requests)" 9

if grep -q 'sekrit0123\|?' "$T/req.log"; then
	fail "the log holds a query string: $(grep 'sekrit0123\|?' "$T/req.log" | head -n 1)"
else
	pass "no query (no signature) in the log"
fi

# ---- no stall per request ----
# Nagle's algorithm on the proxy's answers (headers and body in two writes)
# made each request wait for the client's delayed ACK: 40 ms, minutes of a
# benchmark's mount reads. 100 small GETs on one connection: 4+ s with the
# stall, well under a second without.
python3 - "$PORT" >"$T/rate" <<'EOF' || fail "100 GETs through the pass proxy failed"
import http.client, sys, time
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
t = time.monotonic()
for _ in range(100):
    c.request("GET", "/b/x?size=3000")
    r = c.getresponse()
    r.read()
print("%d" % ((time.monotonic() - t) * 1000))
EOF
ms=$(cat "$T/rate")
if [ -n "$ms" ] && [ "$ms" -lt 2500 ]; then
	pass "100 small GETs through the pass proxy took $ms ms (no per-answer stall)"
else
	fail "100 small GETs through the pass proxy took ${ms:-?} ms: a stall per answer (Nagle's algorithm?)"
fi

# ---- a fault mode logs what it answers ----
bg python3 "$PROXY_PY" --upstream "$STUB" --mode fail --log "$T/fail.log" >"$T/fail.port"
wait_for 10 "the failing proxy to listen" test -s "$T/fail.port" || exit 1
python3 - "$(head -n 1 "$T/fail.port")" <<'EOF' || fail "requests through the failing proxy"
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
for m, t in (("GET", "/b/x"), ("PUT", "/b/y"), ("GET", "/b?list-type=2")):
    c.request(m, t, body=b"12345" if m == "PUT" else None)
    r = c.getresponse()
    r.read()
    assert r.status == 503, r.status
EOF
python3 "$PROXY_PY" --summary "$T/fail.log" >"$T/failgot"
expect_eq "--mode fail: requests logged" "$(get "$T/failgot" requests)" 3
expect_eq "--mode fail: LIST logged" "$(get "$T/failgot" LIST)" 1
expect_eq "--mode fail: bytes up logged" "$(get "$T/failgot" up)" 5
