"""How tensors and answers travel between finplan's Ray Serve deployments (no ray import here).

Tensors go as ``.npy`` bytes (numpy's own format: a short header with dtype, shape and
order, then the raw data) written and read with ``allow_pickle=False``: an object array is
refused on both sides, so no user-supplied bytes are ever unpickled by finplan's code.
Messages between stages are plain dicts of str, int, float, list and bytes, which Ray's
serializer carries without running user code.

Stage message (``StageRequest``, a dict), carrying the live set of the cut (several named tensors
when a mask or a skip crosses it), each as its own ``.npy`` bytes::

    {"tensors": {"attention_mask": <npy bytes>, "layer1": <npy bytes>}, "entry": "layer1",
     "from": "device", "budget_s": 4.9}

(``{"tensor": <npy bytes>, ...}``, one unnamed tensor, is still read.) A request with several
named inputs is a ``.npz`` (a zip of ``NAME.npy`` members, numpy's own format), read member by
member with the same ``.npy`` reader, never with pickle.

Stage answer (a dict), one entry per sample of the tensor the stage received::

    {"exit_names": [...], "predictions": [...], "confidences": [...], "logits": [[...], ...],
     "hops": [hop, ...]}

where each ``hop`` describes one ``NodeRuntime.process`` call on the way (node, busy time,
bytes in and out, counts) and, for a forward, the caller-side round trip minus the callee's
own handling time: the engine's per-hop overhead.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

NPY_MEDIA_TYPE = "application/x-npy"
NPZ_MEDIA_TYPE = "application/x-npz"
NPZ_MAGIC = b"PK\x03\x04"


class WireError(ValueError):
    """Bytes that are not a plain ``.npy`` array (truncated, pickled objects, bad header)."""


def encode_tensor(array: np.ndarray) -> bytes:
    """``.npy`` bytes of ``array`` (C order); refuses object arrays so nothing is pickled."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise WireError(f"dtype {array.dtype} holds Python objects; only plain numeric arrays travel")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_tensor(data: bytes, *, max_bytes: int | None = None) -> np.ndarray:
    """The array in ``.npy`` bytes; raises WireError (one line) for anything else.

    ``max_bytes`` bounds the size the header announces, checked before any data is read, so
    a small request cannot make the reader allocate a huge array.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected .npy bytes, got {type(data).__name__}")
    buffer = io.BytesIO(bytes(data))
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            raise WireError(f"unsupported .npy version {version}")
    except WireError:
        raise
    except Exception as exc:  # numpy raises ValueError/EOFError/... for a bad header
        raise WireError(f"not a .npy array ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise WireError(f"dtype {dtype} holds Python objects; send a numeric array")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    nbytes = count * dtype.itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise WireError(f"the array holds {nbytes} bytes; the limit is {max_bytes}")
    header_end = buffer.tell()
    payload = memoryview(bytes(data))[header_end:]
    if len(payload) != nbytes:
        raise WireError(f"the array announces {nbytes} bytes of data but carries {len(payload)}")
    array = np.frombuffer(payload, dtype=dtype, count=count)
    array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    return array.copy(order="C")  # writable, C order, owns its memory (frombuffer is a read-only view)


def npy_rows(data) -> int:
    """The first dimension a ``.npy`` header announces (1 for a scalar, or for bytes that are not
    a ``.npy``: those are refused when decoded); reads the header only."""
    try:
        buffer = io.BytesIO(bytes(data[:4096]))
        version = np.lib.format.read_magic(buffer)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape = reader(buffer)[0]
    except Exception:  # refused with a clear line by decode_tensor, later
        return 1
    return int(shape[0]) if shape else 1


def encode_tensors(tensors: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Each named tensor as ``.npy`` bytes (a stage message's ``tensors``)."""
    return {str(name): encode_tensor(array) for name, array in tensors.items()}


def decode_tensors(encoded, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The named tensors of a stage message; raises WireError for anything but a dict of ``.npy`` bytes."""
    if not isinstance(encoded, dict) or not encoded:
        raise WireError(f"expected a non-empty mapping name -> .npy bytes, got {type(encoded).__name__}")
    out = {}
    for name, data in encoded.items():
        if not isinstance(name, str):
            raise WireError(f"tensor name {name!r} is not a string")
        try:
            out[name] = decode_tensor(data, max_bytes=max_bytes)
        except WireError as exc:
            raise WireError(f"tensor {name!r}: {exc}") from None
    return out


def is_npz(data) -> bool:
    return bytes(data[:4]) == NPZ_MAGIC


def encode_inputs(tensors: dict[str, np.ndarray]) -> bytes:
    """Several named inputs as ``.npz`` bytes: a zip of ``NAME.npy`` members (what ``np.load`` reads)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in tensors.items():
            archive.writestr(f"{name}.npy", encode_tensor(array))
    return buffer.getvalue()


def decode_inputs(data, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The named arrays of ``.npz`` bytes. Every member's uncompressed size is checked against
    ``max_bytes`` (in total) before it is read, so a small compressed request cannot make the
    reader allocate a huge array; each member goes through ``decode_tensor`` (no pickle)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WireError(f"not a .npz archive ({_first_line(exc)})") from None
    if not members:
        raise WireError("the .npz archive holds no arrays")
    total = 0
    out = {}
    with archive:
        for info in members:
            if not info.filename.endswith(".npy"):
                raise WireError(f"member {info.filename!r} of the .npz archive is not a .npy array")
            total += info.file_size
            if max_bytes is not None and total > max_bytes:
                raise WireError(f"the arrays hold more than {max_bytes} bytes; the limit is {max_bytes}")
            name = info.filename[:-4]
            try:
                raw = archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
                raise WireError(f"member {info.filename!r}: {_first_line(exc)}") from None
            try:
                out[name] = decode_tensor(raw, max_bytes=max_bytes)
            except WireError as exc:
                raise WireError(f"array {name!r}: {exc}") from None
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else exc.__class__.__name__


def answer_from_result(result) -> dict:
    """The per-sample part of a ``NodeResult`` as a plain dict (forwarded samples left empty)."""
    return {
        "exit_names": list(result.exit_names),
        "predictions": [int(p) for p in result.predictions],
        "confidences": [float(c) for c in result.confidences],
        "logits": [None if row is None else [float(v) for v in np.ravel(row)] for row in result.logits],
        "hops": [],
    }


def merge_forwarded(answer: dict, downstream: dict, indices) -> dict:
    """Put the downstream answer for the forwarded samples back at their positions."""
    indices = [int(i) for i in indices]
    if len(downstream["exit_names"]) != len(indices):
        raise ValueError(f"the next node answered for {len(downstream['exit_names'])} samples; {len(indices)} were sent")
    for local, position in enumerate(indices):
        for key in ("exit_names", "predictions", "confidences", "logits"):
            answer[key][position] = downstream[key][local]
    answer["hops"].extend(downstream["hops"])
    return answer


def hop_record(result, *, handled_s: float | None = None) -> dict:
    """What one ``process`` call measured, for the closed-loop report."""
    forward = result.forward
    return {
        "node": result.node,
        "samples_in": int(result.batch_size),
        "busy_s": float(result.busy_s),
        "bytes_in": int(result.bytes_in),
        "bytes_out": int(result.bytes_out),
        # per tensor of the live set sent (the measured bytes behind bytes_out)
        "tensors_out": {} if forward is None else {k: int(v.nbytes) for k, v in forward.tensors.items()},
        "forward_to": None if forward is None else forward.node,
        "forward_samples": 0 if forward is None else int(len(forward.indices)),
        "block_samples": {k: int(v) for k, v in result.block_samples.items()},
        "exit_samples": {k: int(v) for k, v in result.exit_samples.items()},
        "handled_s": handled_s,          # this stage's own time, from receipt to answer (filled by the stage)
        "round_trip_s": None,            # the caller's time for the forward to forward_to (filled by the caller)
        "overhead_s": None,              # round_trip_s minus the callee's handled_s: the engine's cost of the hop
        "emulated_delay_s": 0.0,         # the link model's delay for the forward (with --emulate-links)
        "emulated_delay_actual_s": 0.0,  # what the wait really took (>= the model's)
    }
