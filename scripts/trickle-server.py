#!/usr/bin/env python3
"""An HTTP server on 127.0.0.1 that never finishes a download, for tests: a GET is answered 200
with no length, then one byte every half second, for as long as the client stays.

    trickle-server.py --port-file F [--files DIR [--trickle SUFFIX ...]] [--for SECONDS] [--log F]

--port-file   where the port it listens on is written once it listens.
--files       serve the files of DIR: whole, or a byte every half second for the names that end
              in one of the SUFFIXes (a slow mirror: what comes is the file's true beginning).
--for         end each trickle after SECONDS, closing the connection (a client that never gives
              up then fails otherwise, instead of hanging a test).
--log         append each request's path to this file, a line each, before answering it.
"""
import argparse
import http.server
import os
import time

arguments = argparse.ArgumentParser()
arguments.add_argument("--port-file", required=True)
arguments.add_argument("--files")
arguments.add_argument("--trickle", nargs="*", default=[])
arguments.add_argument("--for", dest="seconds", type=float)
arguments.add_argument("--log")
options = arguments.parse_args()


class Trickle(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if options.log is not None:
            with open(options.log, "a") as log:
                log.write(self.path + "\n")
        name = os.path.basename(self.path)
        body = None
        if options.files is not None:
            body = self.read(os.path.join(options.files, name))
            if body is None:
                return
            if not any(name.endswith(suffix) for suffix in options.trickle):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            sent = 0
            started = time.monotonic()
            while (body is None or sent < len(body)) and (
                options.seconds is None or time.monotonic() - started < options.seconds
            ):
                self.wfile.write(body[sent:sent + 1] if body is not None else b"\x1f")
                self.wfile.flush()
                sent += 1
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def read(self, path):
        try:
            with open(path, "rb") as served:
                return served.read()
        except OSError:
            self.send_error(404)
            return None

    def log_message(self, *_):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
with open(options.port_file + ".tmp", "w") as port_file:
    port_file.write(str(server.server_address[1]))
os.rename(options.port_file + ".tmp", options.port_file)
server.serve_forever()
