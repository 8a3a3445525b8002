"""A structure walker that clears well-formed BSON documents in bulk, without building Python objects.

pymongo's decoder builds a Python object for every value (~100 MB/s on one core). This walker checks
the same structural rules for all documents of a buffer at once, one element per numpy step. Whatever
it cannot clear (a rule broken, code-with-scope, deep nesting, a long tail of very long documents) is
returned as a suspect for pymongo to decide, so a verdict is always pymongo's. Pure: bytes in, indexes
out.
"""

from __future__ import annotations

import numpy as np

_MAX_DEPTH = 24  # deeper documents are left to pymongo
_KEY_WINDOW = 16  # field names up to this length are found without a search
_FEW_LANES = 8
# Value sizes by type byte: >= 0 fixed, -1 variable, -2 not a BSON type.
_SIZES = [-2] * 256
_FIXED = {1: 8, 6: 0, 7: 12, 8: 1, 9: 8, 10: 0, 16: 4, 17: 8, 18: 8, 19: 16, 127: 0, 255: 0}
for _type, _size in _FIXED.items():
    _SIZES[_type] = _size
for _type in (2, 3, 4, 5, 11, 12, 13, 14, 15):
    _SIZES[_type] = -1


def suspect_documents(data: memoryview, starts: list[int]) -> list[int]:
    """Indexes (into ``starts``) of the documents the walker could not clear; pymongo must judge them."""
    if not starts:
        return []
    last = len(data) - 1
    # Zero padding past the end: key windows and int32 reads near the end need no bounds checks.
    buf = np.zeros(len(data) + 2 * _KEY_WINDOW, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    sizes = np.array(_SIZES, dtype=np.int64)
    window = np.arange(_KEY_WINDOW, dtype=np.int64)
    zeros: list = []  # every 0x00 position, computed only if a key is longer than the window

    def byte_at(at):  # at a position computed from a length read from the data: any value
        return buf[np.minimum(np.maximum(at, 0), last)]

    def int32_at(at):  # at a position within the document or just past it: never negative
        at = np.minimum(at, last + _KEY_WINDOW)
        value = buf[at].astype(np.int64)
        value |= buf[at + 1].astype(np.int64) << 8
        value |= buf[at + 2].astype(np.int64) << 16
        value |= buf[at + 3].astype(np.int64) << 24
        return np.where(value >= 1 << 31, value - (1 << 32), value)

    def next_zero(at):
        """The first 0x00 at or after each position (past ``last`` when there is none)."""
        at = np.minimum(at, last + 1)
        hits = buf[at[:, None] + window] == 0
        first = hits.argmax(axis=1)
        out = at + first
        far = ~hits[np.arange(len(at)), first]
        if far.any():
            if not zeros:
                zeros.append(np.flatnonzero(buf[: last + 1] == 0))
            i = np.searchsorted(zeros[0], at[far] + _KEY_WINDOW)
            n = len(zeros[0])
            out[far] = np.where(i < n, zeros[0][np.minimum(i, n - 1)], last + 1) if n else last + 1
        return out

    first = np.asarray(starts, dtype=np.int64)
    pos = first + 4
    end = first + int32_at(first) - 1  # the document's terminating 0x00 (framing checked it)
    depth = np.zeros(len(first), dtype=np.int64)
    stack = np.zeros((len(first), _MAX_DEPTH), dtype=np.int32)  # positions within ~20 MiB
    suspect = np.zeros(len(first), dtype=bool)
    active = np.arange(len(first))
    while active.size:
        if active.size <= _FEW_LANES:  # a long tail: cheaper one by one
            suspect[active] = True
            break
        p, e = pos[active], end[active]
        closing = p == e
        carried = active[:0]
        if closing.any():  # these lanes leave a nested document (or finish) in this step
            lanes = active[closing]
            carried = lanes[depth[lanes] > 0]
            if carried.size:
                level = depth[carried] - 1
                pos[carried] = end[carried] + 1
                end[carried] = stack[carried, level]
                depth[carried] = level
            active, p, e = active[~closing], p[~closing], e[~closing]
            if not active.size:
                active = carried
                continue
        t = byte_at(p)
        k = next_zero(p + 1)
        v = k + 1
        ok = k < e
        size = sizes[t]
        ok &= size != -2
        length = int32_at(v)
        strings = (t == 2) | (t == 13) | (t == 14) | (t == 12)
        if strings.any():
            good = (length >= 1) & (v + 4 + length <= e) & (byte_at(v + 3 + length) == 0)
            ok &= ~strings | good
            size = np.where(strings, 4 + length + np.where(t == 12, 12, 0), size)
        binary = t == 5
        if binary.any():
            old = byte_at(v + 4) == 2
            good = (length >= 0) & (~old | ((length >= 4) & (int32_at(v + 5) == length - 4)))
            ok &= ~binary | good
            size = np.where(binary, 5 + length, size)
        boolean = t == 8
        if boolean.any():
            ok &= ~boolean | (byte_at(v) <= 1)
        regex = t == 11
        if regex.any():
            z2 = next_zero(next_zero(v) + 1)
            size = np.where(regex, z2 + 1 - v, size)
        nested = (t == 3) | (t == 4)
        hard = t == 15  # code with scope: left to pymongo
        size = np.where(nested | hard, 0, size)
        ok &= v + size <= e
        if nested.any():
            good = (length >= 5) & (v + length <= e) & (byte_at(v + length - 1) == 0)
            good &= depth[active] < _MAX_DEPTH - 1
            ok &= ~nested | good
        leave = ~ok | hard
        suspect[active[leave]] = True
        pos[active] = v + size
        push = nested & ok
        if push.any():
            lanes = active[push]
            stack[lanes, depth[lanes]] = end[lanes]
            depth[lanes] += 1
            end[lanes] = v[push] + length[push] - 1
            pos[lanes] = v[push] + 4
        active = np.concatenate([active[~leave], carried]) if carried.size else active[~leave]
    return np.flatnonzero(suspect).tolist()
