#!/usr/bin/env python3
"""A tsvmm control-protocol client using only the Python standard library.

JSON-RPC 2.0 framed as in the Language Server Protocol base protocol
("Content-Length: N\\r\\n\\r\\n" + N bytes of UTF-8 JSON), over a unix
socket or TCP. See docs/protocol.md for every method.

    from tsvmm_client import TsvmmClient
    with TsvmmClient.connect("unix:/tmp/tsvmm.sock") as c:
        vm = c.vm_create(description={"kernel": "guest.elf"})["vmId"]
        c.vm_start(vmId=vm)
        print(c.wait_for_console(vm, "ready"))

`python3 tsvmm_client.py --list-methods` prints the method table, which a
test checks against the protocol's own schema (`tsvmm protocol schema`).
"""
import json
import queue
import socket
import sys
import threading
import base64
import time

PROTOCOL_VERSION = "1.0.0"

# Every request the server handles (besides initialize/shutdown, which the
# client sends itself), as method -> kind. Checked against the protocol.
METHODS = {
    "vm/create": "request",
    "vm/start": "request",
    "vm/pause": "request",
    "vm/resume": "request",
    "vm/reset": "request",
    "vm/shutdown": "request",
    "vm/destroy": "request",
    "vm/list": "request",
    "vm/status": "request",
    "device/list": "request",
    "device/add": "request",
    "device/remove": "request",
    "console/write": "request",
    "migration/start": "request",
    "migration/saveToFile": "request",
    "migration/cancel": "request",
    "migration/setParameters": "request",
    "migration/status": "request",
    "host/capabilities": "request",
    "plugin/list": "request",
    "machine/listTypes": "request",
    "cpu/listModels": "request",
}


class RpcError(Exception):
    """An error response: code, message and data (data["causes"] is the cause chain)."""

    def __init__(self, code, message, data=None):
        super().__init__(f"{message} (error {code})")
        self.code = code
        self.message = message
        self.data = data or {}


def _method_attr(method):
    # vm/create -> vm_create, machine/listTypes -> machine_list_types
    out = []
    for ch in method.replace("/", "_"):
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out)


class TsvmmClient:
    def __init__(self, sock):
        self._sock = sock
        self._next_id = 1
        self._lock = threading.Lock()
        self._pending = {}
        self.notifications = queue.Queue()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.server_capabilities = None

    @classmethod
    def connect(cls, address, auth_token=None, timeout=30):
        """address: unix:PATH or tcp:HOST:PORT."""
        if address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(address[5:])
        elif address.startswith("tcp:"):
            host, _, port = address[4:].rpartition(":")
            sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
            sock.settimeout(None)
        else:
            raise ValueError(f"cannot parse address {address!r}: use unix:PATH or tcp:HOST:PORT")
        client = cls(sock)
        params = {"protocolVersion": PROTOCOL_VERSION, "clientInfo": {"name": "tsvmm python example"}, "capabilities": {}}
        if auth_token is not None:
            params["authToken"] = auth_token
        client.server_capabilities = client.call("initialize", params, timeout=timeout)
        client.notify("initialized", {})
        return client

    # --- framing -----------------------------------------------------------------------

    def _send(self, message):
        body = json.dumps(message).encode("utf-8")
        data = b"Content-Length: %d\r\n\r\n" % len(body) + body
        with self._lock:
            self._sock.sendall(data)

    def _read_exact(self, buf, n):
        while len(buf) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def _read_loop(self):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = self._sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                header, _, buf = buf.partition(b"\r\n\r\n")
                length = None
                for line in header.decode("ascii").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    raise ConnectionError("frame without Content-Length")
                buf = self._read_exact(buf, length)
                body, buf = buf[:length], buf[length:]
                self._dispatch(json.loads(body.decode("utf-8")))
        except (OSError, ConnectionError, ValueError):
            self._closed = True
            with self._lock:
                pending = list(self._pending.values())
            for q in pending:
                q.put({"error": {"code": -32099, "message": "connection closed"}})

    def _dispatch(self, message):
        if "method" in message and "id" not in message:
            self.notifications.put(message)
        elif "id" in message:
            q = self._pending.get(message["id"])
            if q is not None:
                q.put(message)

    # --- requests ----------------------------------------------------------------------

    def call(self, method, params=None, timeout=60):
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            q = queue.Queue()
            self._pending[rid] = q
        try:
            message = {"jsonrpc": "2.0", "id": rid, "method": method}
            if params is not None:
                message["params"] = params
            self._send(message)
            try:
                response = q.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"{method}: no answer within {timeout} s")
        finally:
            self._pending.pop(rid, None)
        if "error" in response:
            e = response["error"]
            raise RpcError(e.get("code"), e.get("message"), e.get("data"))
        return response.get("result")

    def notify(self, method, params=None):
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def __getattr__(self, name):
        for method in METHODS:
            if _method_attr(method) == name:
                return lambda **params: self.call(method, params)
        raise AttributeError(name)

    # --- notifications -----------------------------------------------------------------

    def wait_for(self, predicate, timeout=30):
        """Return the first notification (dict with method/params) satisfying predicate."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching notification")
            try:
                n = self.notifications.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("no matching notification")
            if predicate(n):
                return n

    def wait_for_console(self, vm_id, text, timeout=30):
        """Collect console/output of a VM until it contains text; return what was seen."""
        seen = ""
        deadline = time.monotonic() + timeout
        while text not in seen:
            left = deadline - time.monotonic()
            n = self.wait_for(lambda n: n["method"] == "console/output" and n["params"]["vmId"] == vm_id, max(left, 0.001))
            seen += base64.b64decode(n["params"]["data"]).decode("utf-8", "replace")
        return seen

    def wait_for_state(self, vm_id, state, timeout=30):
        return self.wait_for(
            lambda n: n["method"] == "vm/stateChanged" and n["params"]["vmId"] == vm_id and n["params"]["to"] == state, timeout
        )["params"]

    def close(self):
        if not self._closed:
            try:
                self.call("shutdown", timeout=10)
                self.notify("exit")
            except (OSError, RpcError, TimeoutError):
                pass
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv):
    if argv[1:] == ["--list-methods"]:
        print(json.dumps(METHODS, indent=2))
        return 0
    if len(argv) < 3:
        print("usage: tsvmm_client.py ADDRESS METHOD [JSON]   |   tsvmm_client.py --list-methods", file=sys.stderr)
        return 2
    params = json.loads(argv[3]) if len(argv) > 3 else {}
    with TsvmmClient.connect(argv[1]) as c:
        try:
            print(json.dumps(c.call(argv[2], params), indent=2))
        except RpcError as e:
            print(f"tsvmm_client: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
