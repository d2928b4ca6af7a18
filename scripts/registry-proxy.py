#!/usr/bin/env python3
"""A reverse proxy on 127.0.0.1 in front of a registry, for tests and benchmarks: it counts the
bytes of request and response bodies, and can make faults.

    registry-proxy.py --upstream 127.0.0.1:5000 --port-file F --stats S [--fail N] [--rate B]
                      [--match REGEX]

--port-file   where the port it listens on is written once it listens.
--stats       a JSON file rewritten after each request: requests, bytes up, bytes down.
--fail N      answer 500 to the first N requests whose path matches --match.
--rate B      move the bodies of matching requests (both ways) at B bytes a second.
--port P      listen on P (default: a free port).
"""
import argparse
import http.client
import http.server
import json
import os
import re
import threading
import time

arguments = argparse.ArgumentParser()
arguments.add_argument("--upstream", required=True)
arguments.add_argument("--port-file", required=True)
arguments.add_argument("--stats", required=True)
arguments.add_argument("--fail", type=int, default=0)
arguments.add_argument("--rate", type=int, default=0)
arguments.add_argument("--match", default="/blobs/")
arguments.add_argument("--port", type=int, default=0)
options = arguments.parse_args()

lock = threading.Lock()
stats = {"requests": 0, "bytesUp": 0, "bytesDown": 0, "failed": 0}
failures_left = options.fail
matching = re.compile(options.match)


def record(**counts):
    with lock:
        for name, value in counts.items():
            stats[name] += value
        with open(options.stats + ".tmp", "w") as out:
            json.dump(stats, out)
        os.replace(options.stats + ".tmp", options.stats)


class Pace:
    """Holds a transfer to `rate` bytes a second, counted from its start, so that sleeping late
    once is made up for after."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.moved_bytes = 0

    def moved(self, count):
        self.moved_bytes += count
        wait = self.start + self.moved_bytes / self.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def forward(self):
        global failures_left
        length = int(self.headers.get("Content-Length") or 0)
        matches = bool(matching.search(self.path))
        slow = options.rate and matches
        # 64 KiB at a time, each sent when the rate allows: a link delivers bytes steadily, not in
        # bursts of a tenth of a second's worth.
        step = 65536
        pace = Pace(options.rate) if slow else None
        body = b""
        while len(body) < length:
            chunk = self.rfile.read(min(length - len(body), step if slow else length))
            if not chunk:
                return
            body += chunk
            record(bytesUp=len(chunk))
            if pace:
                pace.moved(len(chunk))
        with lock:
            fail = matches and failures_left > 0
            if fail:
                failures_left -= 1
        if fail:
            record(requests=1, failed=1)
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection(options.upstream, timeout=120)
        headers = {name: value for name, value in self.headers.items() if name.lower() not in ("host", "connection")}
        headers["Host"] = options.upstream
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() in ("connection", "transfer-encoding", "content-length"):
                continue
            if name.lower() == "location":
                value = value.replace("http://" + options.upstream, "http://127.0.0.1:%d" % self.server.server_port)
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            pace = Pace(options.rate) if slow else None
            for start in range(0, len(payload), step if slow else max(1, len(payload))):
                chunk = payload[start:start + (step if slow else len(payload))]
                if pace:
                    pace.moved(len(chunk))
                self.wfile.write(chunk)
                self.wfile.flush()
                record(bytesDown=len(chunk))
        record(requests=1)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = forward


http.server.ThreadingHTTPServer.allow_reuse_address = True
server = http.server.ThreadingHTTPServer(("127.0.0.1", options.port), Proxy)
record()
with open(options.port_file, "w") as out:
    out.write(str(server.server_port))
server.serve_forever()
