"""CRC-64/XZ (Go's hash/crc64 with the ECMA table), the checksum mongodump writes per namespace."""

import fastcrc

_SIGN_BIT = 1 << 63
_MOD = 1 << 64


def crc64_update(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Extend an unsigned running CRC (start from 0) with ``data``."""
    return fastcrc.crc64.xz(data, initial=crc)


def to_signed(crc: int) -> int:
    """The archive stores the CRC as a BSON int64, so values above 2**63 become negative."""
    return crc - _MOD if crc >= _SIGN_BIT else crc
