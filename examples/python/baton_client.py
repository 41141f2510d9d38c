"""A Baton admission client over the daemon's HTTP API, standard library only.

    client = BatonClient("http://127.0.0.1:8080", auth_token=None)
    with client.acquire("core.http", "exec-42") as lease:   # waits in FIFO order
        ...  # run the execution; stop if lease.lost.is_set()
    # leaving the block releases the slot

acquire() long-polls POST .../acquire until the execution is admitted,
calling again after every "still waiting" (202) and after a dropped
connection or a 503 (the same execution ID re-attaches: its place in the
queue is kept and it is never admitted twice). While the lease is held a
thread sends POST .../heartbeat every heartbeat_interval_seconds; a lease
whose heartbeats stop (this process dies) is reclaimed after the lease TTL.
See docs/api.md for the calls and their statuses.
"""

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["BatonClient", "Lease", "BatonError", "QueueFull", "QueueTimeout", "Canceled", "LeaseLost"]


class BatonError(Exception):
    """An error answer of the API: status, code and message."""

    def __init__(self, status, code, message):
        super().__init__("%d %s: %s" % (status, code, message))
        self.status, self.code, self.message = status, code, message


class QueueFull(BatonError):
    """429: the action's queue is full; nothing was queued (acquire retries it only when asked)."""


class QueueTimeout(BatonError):
    """410: the execution waited the queue timeout and was removed."""


class Canceled(BatonError):
    """409 canceled: the waiting execution was canceled by an operator."""


class LeaseLost(BatonError):
    """409 lease_lost: the token holds no slot (released, or reclaimed after its lease expired)."""


_ERRORS = {"queue_full": QueueFull, "queue_timeout": QueueTimeout, "canceled": Canceled, "lease_lost": LeaseLost}


class BatonClient:
    """Calls one daemon, or a load balancer in front of several."""

    def __init__(self, base_url, auth_token=None, wait=30.0, retry_queue_full=False):
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.wait = wait  # seconds each acquire call waits on the daemon (at most 50)
        self.retry_queue_full = retry_queue_full

    def _path(self, action, execution_id, call):
        q = urllib.parse.quote
        return "/api/v1/actions/%s/executions/%s/%s" % (q(action, safe=""), q(execution_id, safe=""), call)

    def _post(self, path, body, timeout):
        """POST a JSON body; returns (status, headers, decoded body). Transport errors raise OSError."""
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        if self.auth_token:
            req.add_header("Authorization", "Bearer " + self.auth_token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.headers, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw or b"{}")
            except ValueError:
                payload = {"error": raw.decode(errors="replace"), "code": "unknown"}
            return e.code, e.headers, payload

    @staticmethod
    def _raise(status, payload):
        cls = _ERRORS.get(payload.get("code"), BatonError)
        raise cls(status, payload.get("code", ""), payload.get("error", ""))

    def acquire(self, action, execution_id, on_waiting=None):
        """Wait until execution_id may run as an execution of action; returns its Lease.

        on_waiting(position), if given, is called after every "still waiting" answer.
        """
        backoff = 0.05
        while True:
            try:
                status, headers, body = self._post(self._path(action, execution_id, "acquire"),
                                                   {"wait": "%gs" % self.wait}, timeout=self.wait + 30)
            except OSError:  # dropped connection, refused, timed out: call again, it re-attaches
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if status == 200:
                return Lease(self, body)
            if status == 202:
                backoff = 0.05
                if on_waiting:
                    on_waiting(body.get("position"))
                continue
            if status == 503:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if status == 429 and self.retry_queue_full:
                time.sleep(float(headers.get("Retry-After") or 1))
                continue
            self._raise(status, body)

    def _token_call(self, lease, call):
        """One heartbeat or release, retried on transport errors and 503 (both are safe to repeat)."""
        backoff = 0.05
        deadline = time.monotonic() + lease.lease_ttl
        while True:
            try:
                status, _, body = self._post(self._path(lease.action, lease.execution_id, call),
                                             {"token": lease.token}, timeout=10)
            except OSError:
                status, body = None, None
            if status == 200:
                return body
            if status not in (None, 503):
                self._raise(status, body)
            if time.monotonic() > deadline:
                raise LeaseLost(0, "lease_lost", "no %s reached the daemon within the lease TTL" % call)
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def heartbeat(self, lease):
        """Keep the lease for another lease TTL; raises LeaseLost when it is gone."""
        return self._token_call(lease, "heartbeat")

    def release(self, lease):
        """Free the slot; raises LeaseLost when the token held none (released already, or reclaimed)."""
        return self._token_call(lease, "release")


class Lease:
    """The right of one execution to hold a slot: its fencing token and lease.

    Use it as a context manager: entering starts the heartbeat thread,
    leaving stops it and releases the slot.
    """

    def __init__(self, client, body):
        self.client = client
        self.action = body["action"]
        self.execution_id = body["execution_id"]
        self.token = int(body["token"])
        self.seq = int(body["seq"])
        self.lease_deadline = body["lease_deadline"]
        self.lease_ttl = float(body["lease_ttl_seconds"])
        self.heartbeat_interval = float(body["heartbeat_interval_seconds"])
        self.lost = threading.Event()  # set when a heartbeat found the lease gone: stop working
        self._stop = threading.Event()
        self._thread = None

    def start_heartbeats(self):
        def beat():
            while not self._stop.wait(self.heartbeat_interval):
                try:
                    self.client.heartbeat(self)
                except LeaseLost:
                    self.lost.set()
                    return
                except BatonError:
                    continue

        self._thread = threading.Thread(target=beat, name="baton-heartbeat-%s" % self.execution_id, daemon=True)
        self._thread.start()

    def stop_heartbeats(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self):
        self.stop_heartbeats()
        self.client.release(self)

    def __enter__(self):
        self.start_heartbeats()
        return self

    def __exit__(self, *exc):
        self.stop_heartbeats()
        if not self.lost.is_set():
            try:
                self.client.release(self)
            except LeaseLost:
                pass
        return False
