"""MurmurHash3_x64_128 compiled with numba, over pairs of Arrow string arrays read in place.

Austin Appleby's reference algorithm (public domain), seed 0; the first 64 bits as a signed
int64, which is what `mmh3.hash64(key)[0]` returns. Row r hashes the bytes url[r] + text[r]
(a null value is empty) without building the concatenation: a 64-bit word that lies wholly inside
one of the two values is one unaligned load; the word that straddles the boundary, and the tail,
are two loads masked and shifted together (gathering them byte by byte, a branch per byte, made
the kernel 1.4x slower on LAION-like rows of ~80 bytes). The loads are little-endian words, so on
a big-endian machine importing this module fails and `etl.engine.hashing` uses its mmh3 loop.
Importing this module imports numba; `etl.engine.hashing` does so only when it first hashes.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

if sys.byteorder != "little":
    raise ImportError("etl.engine.murmur3 reads little-endian words; this machine is big-endian")

C1 = np.uint64(0x87C37B91114253D5)
C2 = np.uint64(0x4CF5AD432745937F)
FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
ADD1 = np.uint64(0x52DCE729)
ADD2 = np.uint64(0x38495AB5)
FIVE = np.uint64(5)


def _cached(**options):
    """`njit(cache=True)` where a cache folder can be written, else without the on-disk cache.

    The cache (beside this file, else numba's user cache) saves the compile (about 1.5 s) in
    every new process; inside a zip shipped with --py-files neither place may be writable.
    """
    def decorate(function):
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return njit(**options)(function)

    return decorate


@njit(inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(inline="always")
def _fmix(k):
    k ^= k >> np.uint64(33)
    k *= FMIX1
    k ^= k >> np.uint64(33)
    k *= FMIX2
    k ^= k >> np.uint64(33)
    return k


@intrinsic
def _load8(typingctx, data, at):
    """The 8 bytes at data[at:at + 8] (a uint8 array) as one word: one unaligned load."""
    if not (isinstance(data, types.Array) and data.dtype == types.uint8 and isinstance(at, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.gep(array.data, [args[1]])
        return builder.load(builder.bitcast(address, ir.IntType(64).as_pointer()), align=1)

    return types.uint64(data, at), codegen


@njit(inline="always")
def _load(data, at, count):
    """`count` (0..8) little-endian bytes from data[at:], zero-extended."""
    if count == 0:
        return np.uint64(0)
    if at + 8 <= data.size:
        word = _load8(data, at)
        return word if count == 8 else word & ((np.uint64(1) << np.uint64(8 * count)) - np.uint64(1))
    word = np.uint64(0)
    for i in range(count):
        word |= np.uint64(data[at + i]) << np.uint64(8 * i)
    return word


@njit(inline="always")
def _word(url, u_at, u_len, text, t_at, pos, count):
    """`count` (0..8) bytes at position `pos` of url[u_at:u_at + u_len] + text[t_at:]."""
    if pos + count <= u_len:
        return _load(url, u_at + pos, count)
    if pos >= u_len:
        return _load(text, t_at + pos - u_len, count)
    in_url = u_len - pos
    return _load(url, u_at + pos, in_url) | (_load(text, t_at, count - in_url) << np.uint64(8 * in_url))


@njit(inline="always")
def _valid(bitmap, bit):
    """Arrow validity: an empty bitmap means no nulls."""
    return bitmap.size == 0 or (bitmap[bit >> 3] >> (bit & 7)) & 1 == 1


@njit(inline="always")
def _mix_block(h1, h2, k1, k2):
    k1 *= C1
    k1 = _rotl(k1, 31)
    k1 *= C2
    h1 ^= k1
    h1 = _rotl(h1, 27)
    h1 += h2
    h1 = h1 * FIVE + ADD1
    k2 *= C2
    k2 = _rotl(k2, 33)
    k2 *= C1
    h2 ^= k2
    h2 = _rotl(h2, 31)
    h2 += h1
    h2 = h2 * FIVE + ADD2
    return h1, h2


@_cached(nogil=True)
def murmur3_x64_64_pairs(u_off, u_data, u_valid, u_bit, t_off, t_data, t_valid, t_bit, out):
    """out[r] = MurmurHash3_x64_128(url[r] + text[r], seed 0)[0:64] as int64.

    Each side is an Arrow string array given as int64 offsets (already sliced to the array:
    len(out) + 1 of them), the data bytes, the validity bitmap bytes (empty: no nulls) and the
    array's bit offset into that bitmap. Runs without the GIL.
    """
    for r in range(out.size):
        u_at = u_off[r]
        u_len = u_off[r + 1] - u_at if _valid(u_valid, u_bit + r) else 0
        t_at = t_off[r]
        t_len = t_off[r + 1] - t_at if _valid(t_valid, t_bit + r) else 0
        length = u_len + t_len
        h1 = np.uint64(0)
        h2 = np.uint64(0)
        blocks = length >> 4
        # Blocks wholly inside the url, the (at most two) blocks across the boundary, then
        # blocks wholly inside the text: only the middle ones need the byte-wise gather.
        in_url = u_len >> 4
        b = 0
        while b < in_url:
            at = u_at + 16 * b
            h1, h2 = _mix_block(h1, h2, _load8(u_data, at), _load8(u_data, at + 8))
            b += 1
        while b < blocks and 16 * b < u_len:
            h1, h2 = _mix_block(h1, h2, _word(u_data, u_at, u_len, t_data, t_at, 16 * b, 8),
                                _word(u_data, u_at, u_len, t_data, t_at, 16 * b + 8, 8))
            b += 1
        while b < blocks:
            at = t_at + 16 * b - u_len
            h1, h2 = _mix_block(h1, h2, _load8(t_data, at), _load8(t_data, at + 8))
            b += 1
        tail = length & 15
        at = 16 * blocks
        if tail > 8:
            k2 = _word(u_data, u_at, u_len, t_data, t_at, at + 8, tail - 8)
            k2 *= C2
            k2 = _rotl(k2, 33)
            k2 *= C1
            h2 ^= k2
        if tail > 0:
            k1 = _word(u_data, u_at, u_len, t_data, t_at, at, min(tail, 8))
            k1 *= C1
            k1 = _rotl(k1, 31)
            k1 *= C2
            h1 ^= k1
        h1 ^= np.uint64(length)
        h2 ^= np.uint64(length)
        h1 += h2
        h2 += h1
        h1 = _fmix(h1)
        h2 = _fmix(h2)
        h1 += h2
        out[r] = np.int64(h1)
