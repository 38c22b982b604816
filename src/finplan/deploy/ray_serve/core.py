"""What the Serve deployments do, as plain async Python (no ray import), so tests run it without Ray.

``StageCore`` wraps one node's ``NodeRuntime``: run the node's stages on the tensors it got (the
live set of the cut),
answer for the samples that exited, forward the rest to the next node (through an async
``call(node, message)`` that the Serve layer backs with a DeploymentHandle) and merge the
answer. ``IngressCore`` checks a request against the deployment's input (size, dtype,
shape), hands it to the entry node within the per-request timeout and turns every failure
into a status and one line naming the problem: nothing is dropped silently.

Failures travel as data (``{"error": {...}}``), not as exceptions, so that a caller never
receives a Ray traceback and the node that failed is named in the answer.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

from finplan.deploy.executor import SLEEP_MARGIN_S
from finplan.deploy.executor import emulate_delay as spin_delay
from finplan.deploy.manifest import TensorSpec
from finplan.deploy.ray_serve.wire import (
    NPY_MEDIA_TYPE, NPZ_MEDIA_TYPE, WireError, answer_from_result, decode_inputs, decode_tensor, decode_tensors,
    encode_tensors, hop_record, is_npz, merge_forwarded,
)
from finplan.errors import FinplanInputError
from finplan.links import Link

Call = Callable[[str, dict], Awaitable[dict]]
# Each callee gets this share of its caller's remaining time, so the deepest timeout fires
# first and the error names the node that did not answer (not the first hop of the chain).
CALLEE_BUDGET_SHARE = 0.9
ACCEPTED_MEDIA_TYPES = (NPY_MEDIA_TYPE, NPZ_MEDIA_TYPE, "application/octet-stream")
LEGACY_INPUT_KEY = "x"  # a single-input model's array in a .npz, as in finplan's data files


@dataclass
class RequestError(Exception):
    """A request that gets a 4xx/5xx answer: ``status`` and one line naming the problem."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def error_answer(status: int, message: str, node: str | None = None) -> dict:
    return {"error": {"status": int(status), "message": message, "node": node}}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{exc.__class__.__name__}: {line}" if line else exc.__class__.__name__


def link_delay_s(link: tuple[float, float] | None, nbytes: int) -> float:
    """The link model's seconds for ``nbytes`` over ``link`` (bandwidth_bps, latency_s): the
    planner's own formula (``Link.time_s``), so emulation and plan cannot disagree."""
    if link is None:
        return 0.0
    bandwidth_bps, latency_s = link
    return Link("", "", float(bandwidth_bps), float(latency_s), 0.0).time_s(nbytes)


async def emulate_delay(delay_s: float) -> float:
    """``executor.emulate_delay`` on the event loop: the bulk is an ``asyncio.sleep`` (other
    requests go on meanwhile), the last ``SLEEP_MARGIN_S`` is spun by the executor's function,
    which holds this replica's loop for at most that long (emulation only)."""
    if delay_s <= 0:
        return 0.0
    start = time.perf_counter()
    if delay_s > SLEEP_MARGIN_S:
        await asyncio.sleep(delay_s - SLEEP_MARGIN_S)
    return spin_delay(delay_s, start=start)


# ---------------------------------------------------------------------------------- validation

def parse_request(body: bytes, content_type: str | None, specs, *, max_request_bytes: int) -> dict[str, np.ndarray]:
    """The input batch in an HTTP body, checked against the deployment's graph inputs ``specs``
    (one TensorSpec or several): name -> array, in graph order.

    A single-input model takes a ``.npy`` array; any model takes a ``.npz`` with one array per
    graph input, named after it (``x`` also names a single-input model's array). Single samples
    (every spec's shape without the batch axis) are given a batch axis of 1. Raises RequestError:
    413 (too large), 415 (not .npy/.npz), 400 (not a readable array), 422 (a missing or unknown
    input, a wrong dtype or shape naming both the received and the expected, different sample
    counts).
    """
    specs = (specs,) if isinstance(specs, TensorSpec) else tuple(specs)
    if len(body) > max_request_bytes:
        raise RequestError(413, f"the request holds {len(body)} bytes; the limit is {max_request_bytes}")
    media = (content_type or "").split(";")[0].strip().lower()
    names = ", ".join(spec.name for spec in specs)
    how = (f"send the input as a .npy array ({NPY_MEDIA_TYPE})" if len(specs) == 1 else
           f"send a .npz ({NPZ_MEDIA_TYPE}) with one array per graph input ({names})")
    if media and media not in ACCEPTED_MEDIA_TYPES:
        raise RequestError(415, f"content type {media!r}; {how}")
    if not body:
        raise RequestError(400, f"the request is empty; {how}")
    try:
        if is_npz(body):
            arrays = decode_inputs(body, max_bytes=max_request_bytes)
            if len(specs) == 1 and specs[0].name not in arrays and LEGACY_INPUT_KEY in arrays:
                arrays = {specs[0].name: arrays.pop(LEGACY_INPUT_KEY), **arrays}
        else:
            array = decode_tensor(body, max_bytes=max_request_bytes)
            if len(specs) != 1:
                raise RequestError(422, f"one .npy array for a model with {len(specs)} inputs; {how}")
            arrays = {specs[0].name: array}
    except WireError as exc:
        raise RequestError(400, str(exc)) from None
    for name in arrays:
        if name not in {spec.name for spec in specs}:
            raise RequestError(422, f"array {name!r} is not a graph input; expected {names}")
    batched = {}
    for spec in specs:
        if spec.name not in arrays:
            raise RequestError(422, f"input {spec.name!r} is missing; {how}")
        batched[spec.name] = _check_request_array(arrays[spec.name], spec)
    counts = {name: array.shape[0] for name, array in batched.items()}
    if len(set(counts.values())) != 1:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise RequestError(422, f"inputs hold different numbers of samples ({listed}); expected one batch")
    if next(iter(counts.values())) == 0:
        raise RequestError(422, f"input {specs[0].name!r} holds no sample")
    return batched


def _check_request_array(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    expected = f"({', '.join(str(d) for d in spec.shape)}) {spec.dtype}"
    if array.dtype != np.dtype(spec.dtype):
        raise RequestError(422, f"input {spec.name!r} has dtype {array.dtype}; expected {spec.dtype} (shape {expected})")
    if array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis]
    shape_ok = array.ndim == len(spec.shape) and all(
        not isinstance(want, int) or want == got for want, got in zip(spec.shape, array.shape))
    if not shape_ok:
        raise RequestError(422, f"input {spec.name!r} has shape {tuple(array.shape)}; expected {expected} "
                                "(or one sample without the batch axis)")
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        # as run, verify and infer refuse such data: a NaN input gets an answer that means nothing
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise RequestError(422, f"input {spec.name!r} holds {bad} NaN or infinite values; expected finite numbers")
    return array


# ---------------------------------------------------------------------------------- stages

class StageCore:
    """One plan node: exit or forward, per sample. ``runtime`` is a NodeRuntime (or alike)."""

    def __init__(self, runtime, call: Call, *, links: dict[str, tuple[float, float]] | None = None,
                 emulate_links: bool = False, default_budget_s: float = 30.0, max_batch_size: int = 1,
                 batch_wait_s: float = 0.0):
        self.runtime = runtime
        self.node = runtime.node
        self.call = call
        self.links = dict(links or {})
        self.emulate_links = emulate_links
        self.default_budget_s = default_budget_s
        self.max_batch_size = int(max_batch_size)
        self.batch_wait_s = float(batch_wait_s)
        # batches still forming, by entry: the leading request's list, which later ones join
        self._forming: dict[str, list[tuple[dict, asyncio.Future]]] = {}
        self._forming_samples: dict[int, int] = {}  # id(list) -> samples in it
        self._forming_full: dict[int, asyncio.Future] = {}  # id(list) -> resolved when it is full
        self._running = 0  # batches of this stage between the start of their parts and their answer
        self._orphans: set[asyncio.Task] = set()  # batches whose leader was cancelled while they formed

    async def handle(self, message: dict) -> dict:
        """The answer for ``message``; with ``max_batch_size`` > 1 it runs in a batch with the
        requests that arrive meanwhile (see ``_run_batch``).

        The first request of a batch leads it, in its own coroutine: when no batch of this stage
        is running (concurrency 1) it runs at once, alone, so batching never delays it; under
        load it waits at most ``batch_wait_s`` (less when the batch fills) for others to join,
        then runs them all. A request that joins waits for its answer only. No task is created
        per batch: each hand-over between tasks costs a turn of the replica's event loop, which
        in Serve's throughput-optimised mode costs far more than the parts of a small model."""
        if self.max_batch_size <= 1:
            return await self.handle_one(message)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        entry = message.get("entry")
        samples = _message_samples(message)
        forming = self._forming.get(entry)
        if forming is not None and self._forming_samples[id(forming)] + samples <= self.max_batch_size:
            forming.append((message, future))
            self._forming_samples[id(forming)] += samples
            if self._forming_samples[id(forming)] >= self.max_batch_size:
                del self._forming[entry]  # full: later requests lead a batch of their own
                _resolve(self._forming_full[id(forming)], None)
            return await future
        batch = [(message, future)]
        if self._running and self.batch_wait_s > 0 and samples < self.max_batch_size:
            full = loop.create_future()
            self._forming[entry] = batch
            self._forming_samples[id(batch)] = samples
            self._forming_full[id(batch)] = full
            timer = loop.call_later(self.batch_wait_s, _resolve, full, None)
            try:
                await full
            except asyncio.CancelledError:  # no longer led: those that joined run as a batch of their own
                if len(batch) > 1:
                    task = loop.create_task(self._run_batch(batch[1:]))
                    self._orphans.add(task)
                    task.add_done_callback(self._orphans.discard)
                raise
            finally:
                timer.cancel()
                if self._forming.get(entry) is batch:
                    del self._forming[entry]
                self._forming_samples.pop(id(batch), None)
                self._forming_full.pop(id(batch), None)
        self._running += 1
        try:
            await self._run_batch(batch)
        except asyncio.CancelledError:  # the leader's caller gave up: the others still get an answer
            for _, other in batch[1:]:
                _resolve(other, error_answer(503, f"node {self.node!r}: the batch was cancelled with the request "
                                                  "that led it; send again", self.node))
            raise
        finally:
            self._running -= 1
        return future.result() if future.done() else error_answer(
            500, f"node {self.node!r} lost the answer of a batched request", self.node)

    async def _run_batch(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        """Run the node's parts once on the requests of ``batch`` put together; answer each request
        whose samples all exited here at once, and forward the remaining samples of all of them as
        one message, splitting its answer back per request.

        The batch's hop record (busy time, block and exit counts, bytes) goes in the answer of one
        request only (the first that forwarded, else the first), so that summing the hops of all
        answers counts every sample once and every batch as one call."""
        if len(batch) == 1:
            message, future = batch[0]
            _resolve(future, await self.handle_one(message))
            return
        received = time.perf_counter()
        decoded, sizes, live = [], [], []
        for message, future in batch:
            try:
                tensors = decode_tensors(message["tensors"]) if "tensors" in message else decode_tensor(message["tensor"])
            except (WireError, KeyError) as exc:
                _resolve(future, error_answer(422, f"node {self.node!r} refused the tensor: {exc}", self.node))
                continue
            tensors = tensors if isinstance(tensors, dict) else {message["entry"]: tensors}
            decoded.append(tensors)
            sizes.append(int(next(iter(tensors.values())).shape[0]))
            live.append((message, future))
        if not live:
            return
        names = list(decoded[0])
        if any(list(t) != names for t in decoded):  # not one batch: answer them one by one
            for message, future in live:
                _resolve(future, await self.handle_one(message))
            return
        joined = {name: np.concatenate([t[name] for t in decoded]) for name in names}
        entry = live[0][0]["entry"]
        try:
            result = self.runtime.process(joined, entry=entry)
        except (FinplanInputError, ValueError) as exc:
            for _, future in live:
                _resolve(future, error_answer(422, f"node {self.node!r} refused the tensor: {exc}", self.node))
            return
        except Exception as exc:  # onnxruntime failures: name the node, keep the replica alive
            for _, future in live:
                _resolve(future, error_answer(500, f"node {self.node!r} failed: {_first_line(exc)}", self.node))
            return
        whole = answer_from_result(result)
        bounds = np.cumsum([0] + sizes)
        answers = [{key: whole[key][bounds[i]:bounds[i + 1]] for key in ("exit_names", "predictions", "confidences",
                                                                          "logits")} | {"hops": []}
                   for i in range(len(live))]
        hop = hop_record(result)
        hop["batch_requests"] = len(live)
        forward = result.forward
        owner = np.searchsorted(bounds, forward.indices, side="right") - 1 if forward is not None else np.array([], int)
        forwarding = set(int(i) for i in owner)
        lead = min(forwarding) if forwarding else 0
        for i, (_, future) in enumerate(live):
            if i not in forwarding and i != lead:
                _resolve(future, answers[i])  # every sample exited here: answered now, nothing downstream
        if forward is None:
            hop["handled_s"] = time.perf_counter() - received
            answers[lead]["hops"] = [hop]
            _resolve(live[lead][1], answers[lead])
            return
        delay = link_delay_s(self.links.get(forward.node), result.bytes_out) if self.emulate_links else 0.0
        hop["emulated_delay_s"] = delay
        hop["emulated_delay_actual_s"] = await emulate_delay(delay)
        budget_s = min(float(m.get("budget_s") or self.default_budget_s) for m, _ in live)
        remaining = budget_s - (time.perf_counter() - received)
        waiting = [i for i in range(len(live)) if i in forwarding]
        if remaining <= 0:
            for i in waiting:
                _resolve(live[i][1], error_answer(504, f"the request ran out of time at node {self.node!r}", self.node))
            return
        message = {"tensors": encode_tensors(forward.tensors), "entry": forward.tensor_name, "from": self.node,
                   "budget_s": remaining * CALLEE_BUDGET_SHARE}
        called = time.perf_counter()
        downstream = await call_with_timeout(self.call, forward.node, message, remaining, caller=self.node)
        round_trip = time.perf_counter() - called
        if "error" not in downstream and len(downstream.get("exit_names", ())) != len(forward.indices):
            downstream = error_answer(502, f"node {forward.node!r}: the next node answered for "
                                           f"{len(downstream.get('exit_names', ()))} samples; "
                                           f"{len(forward.indices)} were sent", forward.node)
        if "error" in downstream:
            for i in waiting:
                _resolve(live[i][1], downstream)
            return
        for local, (position, i) in enumerate(zip(forward.indices, owner)):
            row = int(position) - int(bounds[i])
            for key in ("exit_names", "predictions", "confidences", "logits"):
                answers[i][key][row] = downstream[key][local]
        downstream_hops = downstream["hops"]
        hop["round_trip_s"] = round_trip
        callee = downstream_hops[0].get("handled_s") if downstream_hops else None
        hop["overhead_s"] = None if callee is None else max(round_trip - callee, 0.0)
        hop["handled_s"] = time.perf_counter() - received
        answers[lead]["hops"] = [hop] + downstream_hops
        for i in waiting:
            _resolve(live[i][1], answers[i])

    async def handle_one(self, message: dict) -> dict:
        received = time.perf_counter()
        budget_s = float(message.get("budget_s") or self.default_budget_s)
        try:
            # the live set of the cut, several named tensors (a bare "tensor": one, as earlier versions sent)
            tensors = decode_tensors(message["tensors"]) if "tensors" in message else decode_tensor(message["tensor"])
            result = self.runtime.process(tensors, entry=message["entry"])
        except (WireError, FinplanInputError, KeyError) as exc:
            return error_answer(422, f"node {self.node!r} refused the tensor: {exc}", self.node)
        except Exception as exc:  # onnxruntime failures: name the node, keep the replica alive
            return error_answer(500, f"node {self.node!r} failed: {_first_line(exc)}", self.node)
        answer = answer_from_result(result)
        hop = hop_record(result)
        downstream_hops: list[dict] = []
        forward = result.forward
        if forward is not None:
            delay = link_delay_s(self.links.get(forward.node), result.bytes_out) if self.emulate_links else 0.0
            hop["emulated_delay_s"] = delay
            hop["emulated_delay_actual_s"] = await emulate_delay(delay)
            remaining = budget_s - (time.perf_counter() - received)
            if remaining <= 0:
                return error_answer(504, f"the request ran out of time at node {self.node!r}", self.node)
            message = {"tensors": encode_tensors(forward.tensors), "entry": forward.tensor_name, "from": self.node,
                       "budget_s": remaining * CALLEE_BUDGET_SHARE}
            called = time.perf_counter()
            downstream = await call_with_timeout(self.call, forward.node, message, remaining, caller=self.node)
            round_trip = time.perf_counter() - called
            if "error" in downstream:
                return downstream
            try:
                merge_forwarded(answer, downstream, forward.indices)
            except ValueError as exc:
                return error_answer(502, f"node {forward.node!r}: {exc}", forward.node)
            downstream_hops = answer["hops"]
            hop["round_trip_s"] = round_trip
            callee = downstream_hops[0].get("handled_s") if downstream_hops else None
            hop["overhead_s"] = None if callee is None else max(round_trip - callee, 0.0)
        hop["handled_s"] = time.perf_counter() - received
        answer["hops"] = [hop] + downstream_hops
        return answer


def _message_samples(message: dict) -> int:
    """Samples in a stage message, read from the first tensor's .npy header only (no decoding)."""
    from finplan.deploy.ray_serve.wire import npy_rows

    data = next(iter(message["tensors"].values())) if "tensors" in message else message.get("tensor", b"")
    return npy_rows(data)


def _resolve(future: asyncio.Future, answer: dict) -> None:
    if not future.done():  # its caller may have given up (cancelled) meanwhile
        future.set_result(answer)


_timeout = getattr(asyncio, "timeout", None)


async def call_with_timeout(call: Call, node: str, message: dict, timeout_s: float, *, caller: str) -> dict:
    """``call(node, message)`` within ``timeout_s``; a failure or a timeout becomes an error answer
    naming the node (a dead replica or a departed machine gives an error, never a hang)."""
    try:
        if _timeout is not None:  # Python >= 3.11: no task per call (wait_for wraps the call in one)
            async with _timeout(max(timeout_s, 1e-3)):
                return await call(node, message)
        return await asyncio.wait_for(call(node, message), timeout=max(timeout_s, 1e-3))
    except asyncio.TimeoutError:
        return error_answer(504, f"node {node!r} did not answer within {timeout_s:.2f} s "
                                 f"(its replica may be dead, restarting, or its machine gone)", node)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # Ray raises many kinds (actor died, unavailable, ...): all mean the node failed
        return error_answer(503, f"node {node!r} is unavailable ({_first_line(exc)})", node)


# ---------------------------------------------------------------------------------- ingress

class IngressCore:
    """Checks requests and hands them to the entry node, within the per-request timeout."""

    def __init__(self, *, source: str, entry_node: str, call: Call, timeout_s: float, max_request_bytes: int,
                 input_specs: tuple[TensorSpec, ...] | None = None, input_spec: TensorSpec | None = None,
                 link: tuple[float, float] | None = None, emulate_links: bool = False, info: dict | None = None):
        self.source = source
        self.entry_node = entry_node
        # the graph inputs in graph order (``input_spec``: one, as earlier callers give it)
        self.input_specs = tuple(input_specs) if input_specs is not None else (input_spec,)
        self.input_spec = self.input_specs[0]
        self.call = call
        self.timeout_s = float(timeout_s)
        self.max_request_bytes = int(max_request_bytes)
        self.link = link
        self.emulate_links = emulate_links
        self.info = dict(info or {})

    async def infer(self, x) -> dict:
        """The answer for a checked batch ``x`` (name -> array per graph input, or one array for a
        single-input model), or an error answer (never an exception)."""
        received = time.perf_counter()
        x = x if isinstance(x, dict) else {self.input_spec.name: x}
        nbytes = sum(int(a.nbytes) for a in x.values())
        samples = int(next(iter(x.values())).shape[0])
        delay = actual_delay = 0.0
        if self.emulate_links and self.source != self.entry_node:
            delay = link_delay_s(self.link, nbytes)
            actual_delay = await emulate_delay(delay)
        message = {"tensors": encode_tensors(x), "entry": self.input_spec.name, "from": self.source,
                   "budget_s": (self.timeout_s - delay) * CALLEE_BUDGET_SHARE}
        called = time.perf_counter()
        answer = await call_with_timeout(self.call, self.entry_node, message, self.timeout_s - delay, caller="ingress")
        round_trip = time.perf_counter() - called
        if "error" in answer:
            return answer
        missing = sum(1 for name in answer["exit_names"] if name is None)
        if missing or len(answer["exit_names"]) != samples:  # never answer with samples silently lost
            return error_answer(500, f"{missing or 'some'} of {samples} samples came back without an exit",
                                self.entry_node)
        hops = answer.get("hops") or []
        callee = hops[0].get("handled_s") if hops else None
        ingress_hop = {
            "node": self.source, "kind": "ingress", "samples_in": samples, "busy_s": 0.0,
            "bytes_in": nbytes, "bytes_out": nbytes if self.source != self.entry_node else 0,
            "tensors_out": {k: int(v.nbytes) for k, v in x.items()} if self.source != self.entry_node else {},
            "forward_to": self.entry_node, "forward_samples": samples, "block_samples": {}, "exit_samples": {},
            "round_trip_s": round_trip, "overhead_s": None if callee is None else max(round_trip - callee, 0.0),
            "emulated_delay_s": delay, "emulated_delay_actual_s": actual_delay,
            "handled_s": time.perf_counter() - received,
        }
        answer["hops"] = [ingress_hop] + hops
        return answer

    async def handle_http(self, method: str, body: bytes, content_type: str | None, *,
                          want_logits: bool = False) -> tuple[int, dict]:
        """(status, JSON document) for one HTTP request; GET describes the application."""
        if method == "GET":
            return 200, self.info
        if method != "POST":
            return 405, {"error": f"method {method}; POST a .npy array (a .npz of named arrays for several inputs), "
                                  "or GET for the input description"}
        try:
            x = parse_request(body, content_type, self.input_specs, max_request_bytes=self.max_request_bytes)
        except RequestError as exc:
            return exc.status, {"error": exc.message}
        started = time.perf_counter()
        answer = await self.infer(x)
        if "error" in answer:
            error = answer["error"]
            return error["status"], {"error": error["message"], "node": error.get("node")}
        return 200, http_document(answer, want_logits=want_logits, server_s=time.perf_counter() - started)


def http_document(answer: dict, *, want_logits: bool, server_s: float) -> dict:
    outputs = []
    for i, name in enumerate(answer["exit_names"]):
        item = {"exit": name, "prediction": int(answer["predictions"][i]),
                "confidence": _finite(answer["confidences"][i])}
        if want_logits:
            item["logits"] = answer["logits"][i]
        outputs.append(item)
    return {"outputs": outputs, "hops": answer["hops"], "server_s": server_s}


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
