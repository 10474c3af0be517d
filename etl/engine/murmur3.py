"""MurmurHash3_x64_128 compiled with numba, over pairs of Arrow string arrays, no Python object per row.

Austin Appleby's reference algorithm (public domain), seed 0; the first 64 bits as a signed
int64, which is what `mmh3.hash64(key)[0]` returns. Row r hashes the bytes url[r] + text[r]
(a null value is empty): the two values are copied into a scratch buffer eight bytes at a time
(unaligned loads and stores), then hashed as one key whose tail is two masked loads mixed
without a branch (a zero word changes nothing). Reading the two values in place, as before, took
a data-dependent branch for the word straddling the boundary and for each tail length: on the
bench's rows (79 bytes on average) that kernel hashed 16.6 M rows/s on one core, this one 23.7 M.
The loads are little-endian words, so on a big-endian machine importing this module fails and
`etl.engine.hashing` uses its mmh3 loop.
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


@intrinsic
def _store8(typingctx, data, at, word):
    """data[at:at + 8] = the 8 bytes of `word` (a uint8 array): one unaligned store."""
    if not (isinstance(data, types.Array) and data.dtype == types.uint8 and isinstance(at, types.Integer)
            and word == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.gep(array.data, [args[1]])
        builder.store(args[2], builder.bitcast(address, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(data, at, word), codegen


@njit(inline="always")
def _copy(target, target_at, source, source_at, count):
    """source[source_at:source_at + count] -> target[target_at:], a word at a time; up to 7 bytes
    past the copy are overwritten (the target has room), and read unless the source ends there."""
    if source_at + count + 8 <= source.size:
        done = 0
        while done < count:
            _store8(target, target_at + done, _load8(source, source_at + done))
            done += 8
    else:
        for i in range(count):
            target[target_at + i] = source[source_at + i]


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


# MASKS[n] keeps the low n bytes of a word (n = 0..8).
MASKS = np.array([0] + [(1 << (8 * n)) - 1 for n in range(1, 9)], dtype=np.uint64)
# The scratch buffer's room beyond a key: a tail load reads 16 bytes from the last block's start.
SPARE = 32


@_cached(nogil=True)
def murmur3_x64_64_pairs(u_off, u_data, u_valid, u_bit, t_off, t_data, t_valid, t_bit, out):
    """out[r] = MurmurHash3_x64_128(url[r] + text[r], seed 0)[0:64] as int64.

    Each side is an Arrow string array given as int64 offsets (already sliced to the array:
    len(out) + 1 of them), the data bytes, the validity bitmap bytes (empty: no nulls) and the
    array's bit offset into that bitmap. Runs without the GIL.
    """
    key = np.zeros(4096, dtype=np.uint8)
    for r in range(out.size):
        u_at = u_off[r]
        u_len = u_off[r + 1] - u_at if _valid(u_valid, u_bit + r) else 0
        t_at = t_off[r]
        t_len = t_off[r + 1] - t_at if _valid(t_valid, t_bit + r) else 0
        length = u_len + t_len
        if length + SPARE > key.size:
            key = np.zeros(2 * (length + SPARE), dtype=np.uint8)
        _copy(key, 0, u_data, u_at, u_len)
        _copy(key, u_len, t_data, t_at, t_len)
        h1 = np.uint64(0)
        h2 = np.uint64(0)
        blocks = length >> 4
        for b in range(blocks):
            h1, h2 = _mix_block(h1, h2, _load8(key, 16 * b), _load8(key, 16 * b + 8))
        tail = length & 15
        at = 16 * blocks
        k2 = _load8(key, at + 8) & MASKS[max(tail - 8, 0)]
        k2 *= C2
        k2 = _rotl(k2, 33)
        k2 *= C1
        h2 ^= k2
        k1 = _load8(key, at) & MASKS[min(tail, 8)]
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
