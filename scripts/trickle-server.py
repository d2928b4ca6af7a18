#!/usr/bin/env python3
"""An HTTP server on 127.0.0.1 that never finishes a download, for tests: a GET is answered 200
with no length, then one byte every half second, for as long as the client stays.

    trickle-server.py --port-file F [--files DIR --trickle SUFFIX]

--port-file   where the port it listens on is written once it listens.
--files       serve the files of DIR whole, and trickle only the names that end in SUFFIX
              (a repository whose database comes at once and whose packages never finish).
"""
import argparse
import http.server
import os
import time

arguments = argparse.ArgumentParser()
arguments.add_argument("--port-file", required=True)
arguments.add_argument("--files")
arguments.add_argument("--trickle", default="")
options = arguments.parse_args()


class Trickle(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        name = os.path.basename(self.path)
        if options.files is not None and not (options.trickle and name.endswith(options.trickle)):
            self.whole(os.path.join(options.files, name))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\x1f")
                self.wfile.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def whole(self, path):
        try:
            with open(path, "rb") as served:
                body = served.read()
        except OSError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
with open(options.port_file + ".tmp", "w") as port_file:
    port_file.write(str(server.server_address[1]))
os.rename(options.port_file + ".tmp", options.port_file)
server.serve_forever()
