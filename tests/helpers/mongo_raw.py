"""Raw MongoDB wire messages for the hardening tests: what a hostile
client inside the jail can send that no driver would."""
import struct


def op_msg(doc_bytes, flags=0, checksum=None, request_id=1):
    """An OP_MSG with one body section; `checksum(bytes)` adds the CRC."""
    body = struct.pack("<I", flags) + b"\x00" + doc_bytes
    length = 16 + len(body) + (4 if checksum is not None else 0)
    header = struct.pack("<iiii", length, request_id, 0, 2013)
    tail = struct.pack("<I", checksum(header + body)) if checksum is not None else b""
    return header + body + tail


def crc32c(data):
    """CRC-32C (Castagnoli), OP_MSG's checksum."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def nested_doc(depth):
    """`{a: {a: … {} …}}`, `depth` documents in all, as BSON bytes."""
    doc = b"\x05\x00\x00\x00\x00"
    for _ in range(depth - 1):
        inner = b"\x03a\x00" + doc
        doc = struct.pack("<i", 4 + len(inner) + 1) + inner + b"\x00"
    return doc
