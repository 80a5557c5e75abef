"""Requests to the test application (sdk_app.py) over its Unix socket, standard library only.

    python sdk_app_client.py SOCKET ENDPOINT COUNT CONCURRENCY [STOP_FILE]

Sends COUNT requests (POST ENDPOINT {"prompt": ...}), CONCURRENCY at once; with STOP_FILE,
keeps sending until that file exists. Prints one JSON line per request: its status, the
answer's result, and its time in seconds.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("app", timeout=300)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def request(path, endpoint, prompt):
    started = time.monotonic()
    connection = UnixConnection(path)
    try:
        body = json.dumps({"prompt": prompt})
        connection.request("POST", endpoint, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
        status = response.status
    except Exception as error:
        answer, status = {"error": f"{type(error).__name__}: {error}"}, 0
    finally:
        connection.close()
    return {"status": status, "seconds": time.monotonic() - started, **answer}


def main():
    path, endpoint, count, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    stop = sys.argv[5] if len(sys.argv) > 5 else None
    lock = threading.Lock()
    sent = [0]

    def worker():
        while True:
            with lock:
                if stop is None and sent[0] >= count:
                    return
                if stop is not None and os.path.exists(stop) and sent[0] >= count:
                    return
                sent[0] += 1
                index = sent[0]
            line = request(path, endpoint, f"Say hello {index}.")
            with lock:
                print(json.dumps(line), flush=True)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
