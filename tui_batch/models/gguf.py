"""A small reader for the header of a GGUF file: the metadata a model list shows.

It reads keys and tensor shapes only, never tensor data, so listing a 40 GB model costs
a few milliseconds. Large arrays (the tokenizer's vocabulary) are skipped, not decoded.
A header is untrusted: every count and length is bounded by the bytes left in the file,
and arrays nest at most a few levels, so a damaged file is a GGUFError, never a crash.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
# GGUF value types -> struct format for the fixed-size ones.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
# llama.cpp's LLAMA_FTYPE values, as written to general.file_type.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
# Arrays longer than this are skipped rather than kept (vocabularies, merges).
_MAX_KEPT_ARRAY = 64
# GGUF arrays hold scalars or strings; a few levels of nesting is already generous.
_MAX_DEPTH = 4
_MAX_DIMS = 8


class GGUFError(ValueError):
    """The file is not a GGUF model, or its header is damaged."""


@dataclass(slots=True)
class GGUFInfo:
    architecture: str | None
    name: str | None
    parameters: int
    quantisation: str | None
    context_length: int | None
    chat_template: bool
    metadata: dict[str, Any]

    @property
    def parameters_label(self) -> str:
        return format_count(self.parameters)


def format_count(count: int) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}".replace(".0", "")
    return str(count)


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """The metadata and parameter count of a GGUF file."""
    try:
        with open(path, "rb") as stream:
            metadata, parameters = _read_header(stream)
    except (struct.error, UnicodeDecodeError, MemoryError, OverflowError, RecursionError) as exc:
        raise GGUFError(f"{path}: damaged GGUF header ({exc})") from None
    architecture = metadata.get("general.architecture")
    file_type = metadata.get("general.file_type")
    return GGUFInfo(
        architecture=architecture,
        name=metadata.get("general.name"),
        parameters=parameters,
        quantisation=FILE_TYPES.get(file_type, f"type {file_type}")
        if file_type is not None
        else None,
        context_length=metadata.get(f"{architecture}.context_length"),
        chat_template="tokenizer.chat_template" in metadata,
        metadata=metadata,
    )


def _left(stream: BinaryIO) -> int:
    """Bytes between the read position and the end of the file."""
    return os.fstat(stream.fileno()).st_size - stream.tell()


def _check_count(stream: BinaryIO, count: int, item_size: int, what: str) -> None:
    if count * item_size > _left(stream):
        raise GGUFError(f"{stream.name}: damaged GGUF header ({what} {count} past the end)")


def _read_header(stream: BinaryIO) -> tuple[dict[str, Any], int]:
    if stream.read(4) != GGUF_MAGIC:
        raise GGUFError(f"{stream.name}: not a GGUF file (bad magic number)")
    (version,) = struct.unpack("<I", stream.read(4))
    if version < 2:
        raise GGUFError(f"{stream.name}: GGUF version {version} is too old")
    tensor_count, kv_count = struct.unpack("<QQ", stream.read(16))
    _check_count(stream, kv_count, 12, "key count")  # a key is at least 12 bytes
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = _read_string(stream)
        (value_type,) = struct.unpack("<I", stream.read(4))
        metadata[key] = _read_value(stream, value_type, 0)
    _check_count(stream, tensor_count, 24, "tensor count")
    parameters = 0
    for _ in range(tensor_count):
        _read_string(stream)
        (n_dims,) = struct.unpack("<I", stream.read(4))
        if n_dims > _MAX_DIMS:
            raise GGUFError(f"{stream.name}: damaged GGUF header (a tensor of {n_dims} dims)")
        dims = struct.unpack(f"<{n_dims}Q", stream.read(8 * n_dims))
        stream.read(12)  # tensor type (u32) and data offset (u64)
        count = 1
        for dim in dims:
            count *= dim
        parameters += count
    return metadata, parameters


def _read_string(stream: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", stream.read(8))
    _check_count(stream, length, 1, "string length")
    data = stream.read(length)
    if len(data) != length:
        raise struct.error("unexpected end of file")
    return data.decode("utf-8")


def _read_value(stream: BinaryIO, value_type: int, depth: int) -> Any:
    if value_type in _SCALARS:
        fmt = "<" + _SCALARS[value_type]
        return struct.unpack(fmt, stream.read(struct.calcsize(fmt)))[0]
    if value_type == _STRING:
        return _read_string(stream)
    if value_type == _ARRAY:
        if depth >= _MAX_DEPTH:
            raise GGUFError(f"{stream.name}: damaged GGUF header (arrays nested too deeply)")
        item_type, count = struct.unpack("<IQ", stream.read(12))
        item_size = struct.calcsize("<" + _SCALARS[item_type]) if item_type in _SCALARS else 8
        _check_count(stream, count, item_size, "array length")
        if count <= _MAX_KEPT_ARRAY:
            return [_read_value(stream, item_type, depth + 1) for _ in range(count)]
        if item_type in _SCALARS:
            stream.seek(item_size * count, 1)
        elif item_type == _STRING:
            for _ in range(count):
                (length,) = struct.unpack("<Q", stream.read(8))
                _check_count(stream, length, 1, "string length")
                stream.seek(length, 1)
        else:
            for _ in range(count):
                _read_value(stream, item_type, depth + 1)
        return None
    raise GGUFError(f"{stream.name}: unknown GGUF value type {value_type}")
