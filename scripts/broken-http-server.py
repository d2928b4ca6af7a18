#!/usr/bin/env python3
"""An HTTP server on 127.0.0.1 whose every answer breaks HTTP in one way, for tests: a client
must stop at once, saying the server is at fault, and must not ask again.

    broken-http-server.py --port-file F --count-file C --answer KIND

--port-file   where the port it listens on is written once it listens.
--count-file  where the number of HTTP requests it was sent is written after each one (a TLS
              hello is no HTTP request and is not counted).
--answer      endless-headers: a status line, then header lines for as long as the client reads;
              endless-line: a status line, then one header line that never ends;
              no-colon: a status line, then a line that is no header.
"""
import argparse
import os
import socket
import threading

arguments = argparse.ArgumentParser()
arguments.add_argument("--port-file", required=True)
arguments.add_argument("--count-file", required=True)
arguments.add_argument("--answer", required=True, choices=["endless-headers", "endless-line", "no-colon"])
options = arguments.parse_args()

requests = 0
counting = threading.Lock()


def answer(connection):
    global requests
    try:
        asked = connection.recv(65536)
        if not asked[:8].split(b" ")[0].isalpha():
            return
        with counting:
            requests += 1
            with open(options.count_file + ".tmp", "w") as count_file:
                count_file.write(str(requests))
            os.rename(options.count_file + ".tmp", options.count_file)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        if options.answer == "endless-headers":
            line = b"X-Padding: " + b"p" * 1000 + b"\r\n"
            while True:
                connection.sendall(line * 64)
        elif options.answer == "endless-line":
            connection.sendall(b"X-Padding: ")
            while True:
                connection.sendall(b"p" * 65536)
        else:
            connection.sendall(b"this line is no header\r\n\r\n{}")
    except OSError:
        pass
    finally:
        connection.close()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
with open(options.port_file + ".tmp", "w") as port_file:
    port_file.write(str(listener.getsockname()[1]))
os.rename(options.port_file + ".tmp", options.port_file)
while True:
    accepted, _ = listener.accept()
    threading.Thread(target=answer, args=(accepted,), daemon=True).start()
