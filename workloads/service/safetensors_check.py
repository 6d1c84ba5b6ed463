"""Check a safetensors file's header before any tensor is read from it.

A truncated or corrupt file must fail with a message that names the file and what is
wrong, not with an opaque error deep inside a loader (or, worse, load garbage).
Only safetensors is ever read for weights and adapters: it cannot run code, pickle can.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from datamodel.errors import LoadlensError

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def check_safetensors(path: Path, error: type[LoadlensError]) -> dict[str, TensorInfo]:
    """Validate ``path``'s header against its size; return the tensors it declares.

    Raises ``error`` (a :class:`LoadlensError` subclass chosen by the caller) naming the
    file for: a missing file, a file shorter than its header, a header that is not JSON,
    unknown dtypes, or tensor data that runs past the end of the file.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} does not exist")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise error(f"{path} is truncated: {size} bytes, too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, _MAX_HEADER):
            raise error(
                f"{path} is truncated or not safetensors: header claims {header_len} bytes, "
                f"file has {size}"
            )
        raw = fh.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is corrupt: its safetensors header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise error(f"{path} is corrupt: its safetensors header is not a JSON object")
    data_len = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise error(f"{path} is corrupt: tensor {name!r} has a malformed entry") from exc
        if dtype not in _DTYPE_BYTES:
            raise error(f"{path}: tensor {name!r} has unknown dtype {dtype}")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * _DTYPE_BYTES[dtype]
        if end > data_len or start > end or end - start != nbytes:
            raise error(
                f"{path} is truncated or corrupt: tensor {name!r} needs bytes {start}..{end} "
                f"({nbytes} for {dtype}{list(shape)}), the file holds {data_len} data bytes"
            )
        tensors[name] = TensorInfo(dtype=dtype, shape=shape, nbytes=nbytes)
    return tensors
