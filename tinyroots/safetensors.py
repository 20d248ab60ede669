"""safetensors, the file format of every tinyroots checkpoint: read it, check it, write it.

A safetensors file is three parts, and nothing in it can run code (unlike a pickle):

    8 bytes         N, the header length, little-endian unsigned
    N bytes         a JSON object: {"tensor name": {"dtype": "F32", "shape": [768, 2304],
                    "data_offsets": [begin, end]}, ..., "__metadata__": {"str": "str"}}
    the rest        the data section: each tensor's raw little-endian bytes, C order, at
                    [begin, end) counted from the start of this section

This module knows the format and nothing else (no model, no names): checkpoint.py builds models
from what it returns. It is a strict reader, because a file may come from a stranger:

- the header length is bounded (MAX_HEADER_BYTES) before a byte of it is read;
- the header is parsed without recursion blow-ups (fileio.parse_json), names are unique;
- offsets and shapes must be JSON integers (64.7 is not truncated to 64), never negative;
- each tensor's byte range must be exactly itemsize * prod(shape), computed with Python's
  unbounded ints so a shape like [2**32, 2**32] cannot overflow into a wrong answer;
- the ranges, sorted, must tile the data section exactly: no overlap (two tensors sharing
  bytes), no gap, no trailing garbage.

Every error is a SafetensorsError naming the file, and the tensor when there is one.

bfloat16 ("BF16", what transformers writes for bf16 models) has no NumPy dtype. It is stored as
its 16 bits: the upper half of a float32. float32_to_bf16 / bf16_to_float32 convert; loading
widens BF16 tensors to float32 unless asked for the raw bits (bf16="bits").
"""

import json
import os
import struct

import numpy as np

from .fileio import atomic_write, parse_json

# the format's dtype names -> NumPy dtypes (all little-endian); BF16 -> its raw bits
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U64": np.dtype("<u8"), "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAME_OF_DTYPE = {v.str: k for k, v in DTYPES.items() if k != "BF16"}

# A header holds ~100 bytes of JSON per tensor: GPT-2 XL's 580 tensors take 60 KB. 16 MiB allows
# ~150,000 tensors, far beyond any GPT-2, while a parsed 16 MiB header costs at most a few hundred
# MB of Python objects. (The reference Rust reader allows 100 MB, which costs over 1 GB to parse;
# a header that large is an attack or a corrupt file, so it is refused before it is read.)
MAX_HEADER_BYTES = 16 * 1024 * 1024
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class SafetensorsError(ValueError):
    """A safetensors file that breaks the format (the message names the file and tensor)."""


# ---------------------------------------------------------------------------------------------
# bfloat16


def float32_to_bf16(x):
    """float32 array -> uint16 array of bfloat16 bit patterns, rounded to nearest even.

        1.0 (0x3f800000) -> 0x3f80;  1.00390625 (0x3f808000, a tie) -> 0x3f80 (even)
    NaN stays NaN (a quiet NaN; plain truncation could turn a NaN into infinity).
    """
    bits = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)  # no wrap-around
    # add 0x7fff plus the lowest kept bit, then drop 16 bits: halves round to the even neighbour
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = np.where(nan, (bits >> 16) | 0x0040, rounded)
    return rounded.astype("<u2")


def bf16_to_float32(bits):
    """uint16 array of bfloat16 bit patterns -> float32 array (exact: bf16 is float32's top
    half)."""
    return (np.asarray(bits, dtype="<u2").astype("<u4") << 16).view("<f4")


# ---------------------------------------------------------------------------------------------
# writing


def _as_stored(name, arr, dtype_name):
    """(dtype name, little-endian contiguous array of the bytes to write) for one tensor."""
    if dtype_name == "BF16":
        a = np.asarray(arr)
        bits = a.astype("<u2") if a.dtype.kind == "u" and a.itemsize == 2 else float32_to_bf16(a)
        return "BF16", np.ascontiguousarray(bits)
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    key = _NAME_OF_DTYPE.get(a.dtype.str)
    if key is None or (dtype_name is not None and dtype_name != key):
        raise TypeError(f"save_safetensors: tensor '{name}' has dtype {a.dtype}, which "
                        f"safetensors cannot store as {dtype_name or 'any of its dtypes'}")
    return key, a


def save_safetensors(path, tensors, metadata=None, dtypes=None):
    """Write {name: array} as a safetensors file, atomically; tensors in the order given.

    dtypes: {name: "BF16"} stores those float arrays as bfloat16 (a uint16 array is taken as
    bf16 bits already); every other tensor keeps its NumPy dtype.
    """
    header, offset, arrays = {}, 0, []
    for name, arr in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"save_safetensors: {name!r} cannot name a tensor")
        key, a = _as_stored(name, arr, (dtypes or {}).get(name))
        header[name] = {"dtype": key, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = _json_bytes(header)
    blob += b" " * (-len(blob) % 8)  # pad so the data starts 8-byte aligned
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(memoryview(a.reshape(-1)).cast("B") if a.size else b"")


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# reading: the header, checked


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(path, name, info):
    """One header entry -> (dtype name, shape tuple, begin, end), or SafetensorsError."""
    where = f"{path}: tensor '{name}'"
    if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
        raise SafetensorsError(f"{where}: expected {{\"dtype\", \"shape\", \"data_offsets\"}}, "
                               f"got {_short(info)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise SafetensorsError(f"{where}: unknown dtype {_short(dtype)} (expected one of "
                               f"{', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise SafetensorsError(f"{where}: shape {_short(shape)} is not a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
            and 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where}: data_offsets {_short(offsets)} are not two integers "
                               "0 <= begin <= end")
    begin, end = offsets
    count = 1
    for d in shape:             # Python ints: [2**32, 2**32] cannot overflow
        count *= d
    if end - begin != count * DTYPES[dtype].itemsize:
        raise SafetensorsError(f"{where} (shape {shape}, {dtype}) needs "
                               f"{count * DTYPES[dtype].itemsize} bytes but data_offsets "
                               f"[{begin}, {end}] hold {end - begin}")
    return dtype, tuple(shape), begin, end


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_tiling(path, entries, data_size):
    """The byte ranges, sorted, must cover [0, data_size) exactly once."""
    at, prev = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin < at:
            raise SafetensorsError(f"{path}: tensors '{prev}' and '{name}' overlap (bytes "
                                   f"{begin}..{at} of the data section) -- corrupt file")
        if begin > at:
            raise SafetensorsError(f"{path}: bytes {at}..{begin} of the data section belong to "
                                   f"no tensor (before '{name}') -- corrupt file")
        at, prev = end, name
    if at != data_size:
        what = ("tensor '" + prev + "' ends") if prev else "the tensors end"
        raise SafetensorsError(f"{path}: {what} at byte {at} of the data section, but it holds "
                               f"{data_size} bytes -- " + ("truncated" if at > data_size
                                                           else "trailing bytes after the last "
                                                                "tensor") + " (corrupt file)")


def read_header(path):
    """Read and check a safetensors file's header, not its data.

    Returns (entries {name: (dtype name, shape, begin, end)}, metadata {str: str}, offset of
    the data section, file size).
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except FileNotFoundError:
        raise SafetensorsError(f"{path}: file not found") from None
    except OSError as exc:
        raise SafetensorsError(f"{path}: cannot read it ({exc.strerror})") from None
    with f:
        if size < 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES or n > size - 8 or n < 2:
            raise SafetensorsError(f"{path}: header length {n} does not fit (the file has "
                                   f"{size} bytes; at most {MAX_HEADER_BYTES} bytes of header "
                                   "are read) -- truncated or not a safetensors file")
        raw = f.read(n)
    if raw[:1] != b"{":
        raise SafetensorsError(f"{path}: corrupt safetensors header (it must start with '{{')")
    header = parse_json(raw, f"{path}: corrupt safetensors header", SafetensorsError,
                        unique_keys=True)
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings, got "
                               f"{_short(metadata)}")
    entries = {name: _check_entry(path, name, info) for name, info in header.items()}
    _check_tiling(path, entries, size - 8 - n)
    return entries, metadata, 8 + n, size


def load_safetensors(path, mmap=True, writeable=True, bf16="float32"):
    """Read a safetensors file -> (dict name -> np.ndarray, metadata dict).

    With mmap=True the arrays are views of a copy-on-write memory map: nothing is read until
    used, and writing to an array (training) copies only the pages written, never the file.
    bf16: "float32" widens BF16 tensors to float32 (a copy); "bits" returns their raw uint16
    bit patterns (a view; bf16_to_float32 widens them later).
    """
    if bf16 not in ("float32", "bits"):
        raise ValueError(f"load_safetensors: bf16 must be 'float32' or 'bits', got {bf16!r}")
    entries, metadata, start, size = read_header(path)
    if mmap and size > start:
        buf = np.memmap(path, dtype=np.uint8, mode="c" if writeable else "r")
    else:
        with open(path, "rb") as f:
            buf = np.frombuffer(f.read(), dtype=np.uint8)
    out = {}
    for name, (dtype, shape, begin, end) in entries.items():
        arr = buf[start + begin:start + end].view(DTYPES[dtype]).reshape(shape)
        if dtype == "BF16" and bf16 == "float32":
            arr = bf16_to_float32(arr)
        out[name] = np.asarray(arr)  # a plain ndarray view; it keeps the map alive
    return out, metadata
