"""A fault-injecting reverse proxy for an S3-compatible server on loopback.

Clients point their S3 endpoint at the proxy; it forwards every request unchanged (the Host
header too, so SigV4 signatures made for the proxy's address still verify upstream) unless a
rule matches. A rule answers, for the first `times` matching requests or for every one:

- `slow_down`: 503 with S3's `SlowDown` error body (how S3 throttles),
- `internal_error`: 500 with S3's `InternalError` body,
- `stall`: no answer for `stall_seconds`, then the connection is dropped (a hung server).

Every request is logged with its time, client and what the proxy did, so a test can assert that
a client retried (the same request seen again after the fault) and how soon.

The proxy runs in a process of its own: delta-rs holds the GIL while it waits for S3, so a
proxy thread inside the test process could not answer it. Tests drive it through `FaultProxy`,
which talks to control paths under `/_faultproxy/` (no S3 bucket name starts with `_`).
"""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional

FORWARD = "forward"
STALL = "stall"
ERRORS = {
    "slow_down": (503, "SlowDown", "Please reduce your request rate."),
    "internal_error": (500, "InternalError", "We encountered an internal error. Please try again."),
}
CONTROL = "/_faultproxy/"
# Headers that describe one hop's connection, not the request: never passed on.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


@dataclass
class Rule:
    """Fault `action` for requests whose method is `method` (any when None), whose target (path
    and query) contains `path_contains` and whose User-Agent contains `agent` (which client:
    `aws-sdk-cpp` is pyarrow, `object_store` Sail and delta-rs, `Boto3` boto3); for the first
    `times` of them, or every one when None. `id` is given by the proxy when the rule is added."""

    action: str
    path_contains: str = ""
    method: Optional[str] = None
    agent: str = ""
    times: Optional[int] = None
    stall_seconds: float = 10.0
    id: Optional[int] = None

    def __post_init__(self) -> None:
        if self.action not in (*ERRORS, STALL):
            raise ValueError(f"unknown fault action {self.action!r}")

    def matches(self, method: str, target: str, agent: str) -> bool:
        return (self.method is None or self.method == method) and self.path_contains in target and self.agent in agent


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() in the proxy when the request arrived (one clock for all processes)
    method: str
    target: str
    agent: str
    action: str  # FORWARD or the fault applied
    status: Optional[int]  # the status sent back; None for a stall or a client that hung up
    rule: Optional[int] = None  # id of the rule that faulted it


class FaultProxy:
    """`with FaultProxy(upstream) as proxy:` serves on `proxy.endpoint` until the block ends."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._process: Optional[subprocess.Popen] = None
        self.endpoint = ""

    def __enter__(self) -> "FaultProxy":
        self._process = subprocess.Popen([sys.executable, __file__, self.upstream], stdout=subprocess.PIPE, text=True)
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            self._process.kill()
            raise RuntimeError(f"the fault proxy did not start (said {port!r})")
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._process.kill()
        self._process.wait()

    def add(self, rule: Rule) -> Rule:
        rule.id = self._control("POST", "rules", asdict(rule))["id"]
        return rule

    def clear(self) -> None:
        """Drop every rule and the log: the proxy forwards everything again."""
        self._control("DELETE", "rules")

    def seen(self, path_contains: str = "", method: Optional[str] = None, agent: str = "") -> list[Seen]:
        log = [Seen(**entry) for entry in self._control("GET", "log")]
        return [s for s in log if path_contains in s.target and (method is None or s.method == method)
                and agent in s.agent]

    def faulted(self, rule: Rule) -> list[Seen]:
        """The requests `rule` answered with its fault."""
        return [s for s in self.seen() if s.rule == rule.id]

    def _control(self, method: str, what: str, payload: Optional[dict] = None):
        connection = http.client.HTTPConnection(self.endpoint.split("://", 1)[1], timeout=10)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            connection.request(method, CONTROL + what, body=body)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"fault proxy: {method} {what}: {response.status} {answer[:200]!r}")
            return json.loads(answer)
        finally:
            connection.close()


class _State:
    """The proxy process's rules, how often each was applied, and its request log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[Rule] = []
        self.applied: dict[int, int] = {}
        self.log: list[Seen] = []
        self.next_id = 0

    def add(self, spec: dict) -> int:
        with self.lock:
            rule = Rule(**{**spec, "id": self.next_id})
            self.next_id += 1
            self.rules.append(rule)
            self.applied[rule.id] = 0
            return rule.id

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()

    def decide(self, method: str, target: str, agent: str) -> Optional[Rule]:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, target, agent) and (rule.times is None or self.applied[rule.id] < rule.times):
                    self.applied[rule.id] += 1
                    return rule
        return None

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.log.append(seen)


def _handler_class(state: _State, upstream_host: str, upstream_port: int):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
        # Headers and body go out in separate writes: with Nagle's algorithm on, each answer
        # would wait for the client's delayed ACK (40 ms), slowing a build sevenfold.
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:  # the proxy's own log is the state's
            pass

        def _serve(self) -> None:
            arrived = time.monotonic()
            body = self._read_body()  # always consumed, so a kept-alive connection stays in step
            if self.path.startswith(CONTROL):
                self._control(body)
                return
            agent = self.headers.get("User-Agent", "")
            rule = state.decide(self.command, self.path, agent)
            if rule is None:
                try:
                    status = self._forward(body)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: its right
                    status = None
                    self.close_connection = True
                state.record(Seen(arrived, self.command, self.path, agent, FORWARD, status))
            elif rule.action == STALL:
                state.record(Seen(arrived, self.command, self.path, agent, STALL, None, rule.id))
                time.sleep(rule.stall_seconds)
                self.close_connection = True  # hang up without an answer
            else:
                status, code, message = ERRORS[rule.action]
                state.record(Seen(arrived, self.command, self.path, agent, rule.action, status, rule.id))
                self._send_error(status, code, message)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        def _read_body(self) -> bytes:
            """The request body as sent (chunked bodies stay chunked, framing included)."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raw = bytearray()
                while True:
                    size_line = self.rfile.readline()
                    raw += size_line
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while True:  # trailers, up to the blank line
                            line = self.rfile.readline()
                            raw += line
                            if line in (b"\r\n", b"\n", b""):
                                return bytes(raw)
                    raw += self.rfile.read(size + 2)  # the chunk and its CRLF
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> int:
            upstream = http.client.HTTPConnection(upstream_host, upstream_port, timeout=60)
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        upstream.putheader(name, value)
                upstream.endheaders(body or None)
                response = upstream.getresponse()
                payload = response.read()  # de-chunked; re-sent with a Content-Length below
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    lowered = name.lower()
                    if lowered in HOP_BY_HOP or lowered == "transfer-encoding":
                        continue
                    if lowered == "content-length" and self.command != "HEAD":
                        continue
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return response.status
            finally:
                upstream.close()

        def _send_error(self, status: int, code: str, message: str) -> None:
            request_id = f"faultproxy-{time.monotonic_ns()}"
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                       f"<Message>{message}</Message><Resource>{self.path}</Resource>"
                       f"<RequestId>{request_id}</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("x-amz-request-id", request_id)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _control(self, body: bytes) -> None:
            what = self.path[len(CONTROL):]
            if (self.command, what) == ("POST", "rules"):
                answer = {"id": state.add(json.loads(body))}
            elif (self.command, what) == ("DELETE", "rules"):
                state.clear()
                answer = {}
            elif (self.command, what) == ("GET", "log"):
                with state.lock:
                    answer = [asdict(seen) for seen in state.log]
            else:
                self.send_error(404, f"no control {self.command} {what}")
                return
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def serve(upstream: str) -> None:
    """Run the proxy in front of `upstream` (http://host:port); print the port, serve until killed."""
    scheme, _, host = upstream.partition("://")
    if scheme != "http":
        raise SystemExit(f"the fault proxy forwards plain http only, not {upstream}")
    upstream_host, _, port = host.rstrip("/").partition(":")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(_State(), upstream_host, int(port or 80)))
    server.daemon_threads = True  # a stalled handler must not hold up the exit
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1])
