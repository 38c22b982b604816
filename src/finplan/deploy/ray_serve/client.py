"""The HTTP client of ``finplan infer`` (standard library only; no ray).

``describe(url)`` asks the service for its inputs (GET); ``infer_many(url, x, ...)`` sends
the inputs (one array, or name -> array for several graph inputs: a ``.npz`` per request), one
sample or batch per request, ``concurrency`` requests in flight, each with a
timeout, and returns an ``InferReport``: every request is counted as answered or failed
(with its status and message), nothing is dropped.
"""
from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from finplan.deploy.ray_serve.wire import NPY_MEDIA_TYPE, NPZ_MEDIA_TYPE, encode_inputs, encode_tensor
from finplan.errors import EnvironmentFault, FinplanInputError


@dataclass
class InferReport:
    url: str
    requests: int
    samples: int
    concurrency: int
    answered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)       # "status message" -> count
    exit_names: list[str | None] = field(default_factory=list)  # per sample (None: its request failed)
    predictions: list[int | None] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)         # per answered request (client round trip)
    labels: list[int] | None = None
    wall_s: float = 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latency_s, dtype=float)
        exits: dict[str, int] = {}
        for name in self.exit_names:
            if name is not None:
                exits[name] = exits.get(name, 0) + 1
        accuracy = None
        if self.labels is not None:
            pairs = [(p, y) for p, y in zip(self.predictions, self.labels) if p is not None]
            accuracy = (sum(p == y for p, y in pairs) / len(pairs)) if pairs else None
        pct = (lambda q: float(np.percentile(lat, q)) if lat.size else None)
        return {
            "url": self.url, "requests": self.requests, "samples": self.samples, "concurrency": self.concurrency,
            "answered": self.answered, "failed": self.failed, "errors": dict(self.errors),
            "exit_counts": exits, "accuracy": accuracy,
            "latency_s": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "mean": float(lat.mean()) if lat.size else None,
                          "max": float(lat.max()) if lat.size else None, "how": "client round trip per request"},
            "throughput_samples_per_s": (sum(1 for e in self.exit_names if e is not None) / self.wall_s) if self.wall_s else None,
            "wall_s": self.wall_s,
        }


class _Connection:
    """One keep-alive HTTP connection per worker thread; reopened after any failure."""

    def __init__(self, url: str, timeout_s: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FinplanInputError(f"is {url!r}; expected http://HOST:PORT/APPLICATION (finplan serve prints it)",
                                    field="URL")
        self.parts = parts
        self.path = parts.path or "/"
        self.timeout_s = timeout_s
        self.conn = None

    def request(self, method: str, body: bytes | None = None, content_type: str = NPY_MEDIA_TYPE) -> tuple[int, dict]:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
            self.conn = cls(self.parts.hostname, self.parts.port, timeout=self.timeout_s)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            self.conn.request(method, self.path, body=body, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except BaseException:
            self.close()
            raise
        try:
            doc = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = {"error": raw[:200].decode("utf-8", "replace")}
        if not isinstance(doc, dict):
            doc = {"error": f"unexpected answer {str(doc)[:100]}"}
        return response.status, doc

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def describe(url: str, *, timeout_s: float = 10.0) -> dict:
    """The service's description (input name, shape, dtype, limits); one clear line when it does not answer."""
    connection = _Connection(url, timeout_s)
    try:
        status, doc = connection.request("GET")
    except OSError as exc:
        raise EnvironmentFault(f"URL: no finplan service answers at {url} ({exc.strerror or exc.__class__.__name__}: "
                               f"{exc})", check="is `finplan serve` running?") from None
    finally:
        connection.close()
    if status != 200 or not ("inputs" in doc or "input" in doc):
        raise FinplanInputError(f"{url} answered {status} without a finplan input description "
                                f"({doc.get('error', 'not a finplan service?')})", field="URL")
    return doc


def input_specs_of(info: dict):
    """The graph inputs a service describes (``inputs``; ``input`` from a service before several inputs)."""
    from finplan.deploy.manifest import TensorSpec

    listed = info["inputs"] if "inputs" in info else [info["input"]]
    return tuple(TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in listed)


def infer_many(url: str, x, labels: np.ndarray | None = None, *, concurrency: int = 1,
               batch_size: int = 1, timeout_s: float = 30.0, progress=None) -> InferReport:
    """Send every sample of ``x`` (one array, or name -> array per graph input; ``batch_size``
    per request, ``concurrency`` at a time)."""
    if concurrency < 1:
        raise FinplanInputError(f"is {concurrency}; expected an integer >= 1", field="--concurrency")
    named = isinstance(x, dict)
    n = int(next(iter(x.values())).shape[0]) if named else int(x.shape[0])
    batches = [(begin, min(begin + batch_size, n)) for begin in range(0, n, batch_size)]
    report = InferReport(url=url, requests=len(batches), samples=n, concurrency=concurrency,
                         exit_names=[None] * n, predictions=[None] * n, confidences=[None] * n,
                         labels=None if labels is None else [int(v) for v in labels])
    lock = threading.Lock()
    local = threading.local()
    connections: list[_Connection] = []
    done = [0]

    def connection() -> _Connection:
        if not hasattr(local, "conn"):
            local.conn = _Connection(url, timeout_s)
            with lock:
                connections.append(local.conn)
        return local.conn

    def one(batch: tuple[int, int]) -> None:
        begin, end = batch
        if named:
            body, media = encode_inputs({k: np.ascontiguousarray(v[begin:end]) for k, v in x.items()}), NPZ_MEDIA_TYPE
        else:
            body, media = encode_tensor(np.ascontiguousarray(x[begin:end])), NPY_MEDIA_TYPE
        started = time.perf_counter()
        try:
            status, doc = connection().request("POST", body, media)
        except (OSError, http.client.HTTPException) as exc:
            status, doc = 0, {"error": f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__}
        elapsed = time.perf_counter() - started
        outputs = doc.get("outputs") if status == 200 else None
        with lock:
            if outputs is not None and len(outputs) == end - begin:
                report.answered += 1
                report.latency_s.append(elapsed)
                for offset, item in enumerate(outputs):
                    report.exit_names[begin + offset] = item.get("exit")
                    report.predictions[begin + offset] = item.get("prediction")
                    report.confidences[begin + offset] = item.get("confidence")
            else:
                report.failed += 1
                message = doc.get("error") or f"answer for {len(outputs or [])} of {end - begin} samples"
                key = f"{status or 'no answer'} {message}"
                report.errors[key] = report.errors.get(key, 0) + 1
            done[0] += end - begin
            if progress is not None:
                progress("sending", done[0], n)

    wall_start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="finplan-infer") as pool:
            list(pool.map(one, batches))
    finally:
        for conn in connections:
            conn.close()
    report.wall_s = time.perf_counter() - wall_start
    return report
