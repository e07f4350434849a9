"""Arrow columns from numpy, without a Python string per row: version-4 UUIDs, numbered ids
(``DRV-...-007``), fixed-width text, repeated values.

The string kernels of generation: pure, vectorised, and exactly the strings the f-strings they
replace would give.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import pyarrow as pa

__all__ = [
    "DASH",
    "TIMESTAMP",
    "Strings",
    "ascii_codes",
    "fixed_width_strings",
    "numbered_strings",
    "pick",
    "repeated_string",
    "repeated_timestamp",
    "uuid_strings",
    "uuid_text",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _units(*chars: np.ndarray | int) -> np.ndarray:
    """Four columns of ASCII codes as one uint32 per row, the characters in memory order."""
    c = [np.asarray(x, dtype=np.uint32) for x in chars]
    packed: np.ndarray = np.asarray(c[0] | (c[1] << 8) | (c[2] << 16) | (c[3] << 24), dtype=np.uint32)
    return packed


def _hex(keys: np.ndarray, shift: int) -> np.ndarray:
    digits: np.ndarray = _HEX[(keys >> shift) & 0x0F]
    return digits


# A UUID's 36 characters are nine 4-character units, and each unit is a function of at most
# 16 of the 128 random bits: one table look-up per unit formats a row (np.take, no per-row
# slicing). With w0..w7 the big-endian 16-bit words of the 16 octets:
#   units 0, 1, 6, 7, 8: the hex of w0, w1, w5, w6, w7
#   unit 2: "-" + hex(w2 >> 4)                       (12 bits)
#   unit 3: hex(w2 & 0xF) + "-4" + hex(w3 >> 8 & 0xF)  (8 bits; "4" is the version nibble)
#   unit 4: hex(w3 & 0xFF) + "-" + variant nibble     (10 bits; 8 | the 2 kept bits of octet 8)
#   unit 5: hex(w4 & 0xFFF) + "-"                     (12 bits)
_K16, _K12, _K10, _K8 = (np.arange(1 << bits) for bits in (16, 12, 10, 8))
DASH, _FOUR, _DIGIT = ord("-"), ord("4"), ord("0")
_UUID_TABLES = (
    _units(_hex(_K16, 12), _hex(_K16, 8), _hex(_K16, 4), _hex(_K16, 0)),
    _units(DASH, _hex(_K12, 8), _hex(_K12, 4), _hex(_K12, 0)),
    _units(_hex(_K8, 4), DASH, _FOUR, _hex(_K8, 0)),
    _units(_hex(_K10, 6), _hex(_K10, 2), DASH, _HEX[8 | (_K10 & 3)]),
    _units(_hex(_K12, 8), _hex(_K12, 4), _hex(_K12, 0), DASH),
)
_UUID_UNITS = np.concatenate(_UUID_TABLES)
# Where the tables of units 2, 3, 4 and 5 start in _UUID_UNITS.
_U2, _U3, _U4, _U5 = np.cumsum([t.size for t in _UUID_TABLES])[:4].tolist()


def uuid_strings(raw: np.ndarray) -> pa.StringArray:
    """Format 128 random bits per row (uint64 array of shape (n, 2)) as version-4 UUID strings."""
    return fixed_width_strings(uuid_text(raw))


def uuid_text(raw: np.ndarray) -> np.ndarray:
    """The UUID strings of :func:`uuid_strings` as an (n, 36) uint8 matrix of ASCII."""
    n = int(raw.shape[0])
    # (8, n): word k of every row contiguous, so the index arithmetic runs on contiguous rows.
    w = np.ascontiguousarray(raw.astype(">u8").view(">u2").reshape(n, 8).T).astype(np.intp)
    idx = np.empty((9, n), dtype=np.intp)
    idx[0:2] = w[0:2]
    idx[6:9] = w[5:8]
    np.right_shift(w[2], 4, out=idx[2])
    idx[2] += _U2
    idx[3] = ((w[2] & 0x0F) << 4) | ((w[3] >> 8) & 0x0F)
    idx[3] += _U3
    idx[4] = ((w[3] & 0xFF) << 2) | ((w[4] >> 12) & 0x03)
    idx[4] += _U4
    np.bitwise_and(w[4], 0xFFF, out=idx[5])
    idx[5] += _U5
    text: np.ndarray = np.take(_UUID_UNITS, idx.T).view(np.uint8)
    return text


def fixed_width_strings(text: np.ndarray) -> pa.StringArray:
    """A string array whose row i is the bytes of ``text[i]`` (a C-contiguous uint8 matrix)."""
    n, width = text.shape
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(text)))


# Strings of equal width as an (n, width) ASCII matrix, or a string array when widths differ.
Strings: TypeAlias = "np.ndarray | pa.StringArray"


def pick(strings: Strings, idx: np.ndarray) -> pa.StringArray:
    """``strings[idx]`` as a string array; numpy gathers fixed-width rows about twice as fast as Arrow's take."""
    if isinstance(strings, np.ndarray):
        return fixed_width_strings(np.take(strings, idx, axis=0))
    return strings.take(pa.array(idx))


def numbered_strings(heads: np.ndarray, numbers: np.ndarray, width: int) -> Strings:
    """Row i: the bytes ``heads[i]`` (or ``heads`` for every row when it is 1-D) then ``numbers[i]``
    (>= 0) in decimal, zero-padded to ``width``.

    The vectorised form of ``f"{head}{number:0{width}d}"``; a number wider than ``width`` keeps all
    its digits, as the f-string does.
    """
    n, head_width = int(numbers.size), int(heads.shape[-1])
    digits = np.full(n, width, dtype=np.int64)
    if n and int(numbers.max()) >= 10**width:
        powers = 10 ** np.arange(width, 19, dtype=np.int64)
        digits += np.searchsorted(powers, numbers, side="right")
    most = int(digits.max()) if n else width
    text = np.empty((n, head_width + most), dtype=np.uint8)
    text[:, :head_width] = heads
    rest = numbers.copy()
    for col in range(head_width + most - 1, head_width - 1, -1):
        text[:, col] = _DIGIT + rest % 10
        rest //= 10
    if n == 0 or int(digits.min()) == most:
        return text
    # Mixed widths: drop each row's surplus leading zeros, keep the rest in row order.
    keep = np.arange(head_width + most) >= (head_width + most - digits)[:, None]
    keep[:, :head_width] = True
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(head_width + digits, out=offsets[1:])
    strings: Strings = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text[keep]))
    return strings


def ascii_codes(text: str) -> np.ndarray:
    """``text`` as a uint8 vector of its ASCII codes."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8)


def repeated_string(value: str, n: int) -> pa.StringArray:
    return fixed_width_strings(np.tile(ascii_codes(value), (n, 1)))


def repeated_timestamp(value_us: int, n: int) -> pa.TimestampArray:
    return pa.array(np.full(n, value_us, dtype=np.int64), type=TIMESTAMP)
