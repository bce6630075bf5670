"""Minimal hand-written reader/writer for the safetensors format.

Only what the PC-DARTS fixtures need: F32 and I64 tensors, little-endian, plus
string metadata. Deliberately independent of the `safetensors` pip package so
that the fixture generator only needs torch (Debian `python3-torch`).

Layout written by `save`:
  * 8 bytes: little-endian u64 N = length of the JSON header in bytes
  * N bytes: UTF-8 JSON object
        {"__metadata__": {str: str}, "<name>": {"dtype": "F32"|"I64",
         "shape": [...], "data_offsets": [begin, end]}, ...}
    padded with trailing spaces so that 8 + N is a multiple of 8
  * the raw little-endian tensor bytes, tensors laid out in name order;
    data_offsets are relative to the first byte after the header.
"""

import json
import struct

import numpy as np

_DTYPES = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}


def _to_numpy(value):
    """Accept numpy arrays, torch tensors, python scalars/lists."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().contiguous().numpy()
    return np.asarray(value)


def _dtype_tag(array):
    if array.dtype.kind == "f":
        return "F32"  # all float data is stored as float32
    if array.dtype.kind in "iub":
        return "I64"  # all integer data (labels, counters) is stored as int64
    raise TypeError("unsupported dtype %s" % array.dtype)


def save(path, tensors, metadata=None):
    """Write `tensors` ({name: array-like}) and `metadata` ({str: str})."""
    names = sorted(tensors)
    header = {}
    chunks = []
    offset = 0
    for name in names:
        array = _to_numpy(tensors[name])
        tag = _dtype_tag(array)
        raw = np.ascontiguousarray(array, dtype=_DTYPES[tag]).tobytes()
        header[name] = {
            "dtype": tag,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("metadata must map str to str (%r)" % (key,))
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for raw in chunks:
            handle.write(raw)


def load(path):
    """Return (tensors, metadata): numpy arrays by name, metadata dict."""
    with open(path, "rb") as handle:
        blob = handle.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = memoryview(blob)[8 + length:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        array = np.frombuffer(data[begin:end], dtype=dtype).copy()
        tensors[name] = array.reshape(info["shape"])
    return tensors, metadata


if __name__ == "__main__":
    import sys

    for file_path in sys.argv[1:]:
        loaded, meta = load(file_path)
        print(file_path)
        for key in sorted(meta):
            print("  meta %s = %s" % (key, meta[key]))
        for key in sorted(loaded):
            print("  %-60s %s %s" % (key, loaded[key].dtype, list(loaded[key].shape)))
