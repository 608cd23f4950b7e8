"""Writes the golden values of storage format versions 1, 2 and 3, byte by byte.

Written by hand from the layout in storage/src/records.rs, not with the Rust
encoder, so the golden test catches an encoder that drifts. Run from this
directory: python3 make.py. Existing files must not change; a new format
version gets a new directory.
"""
import struct

def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def s(b): return u32(len(b)) + b

V1 = b"\x01"

session = (V1
    + b"\x05"                      # protocol_level 5
    + u32(3600)                    # session_expiry_interval
    + b"\x01" + u64(1_700_000_000_000))  # disconnected_at_ms Some

subscription = (V1
    + s(b"sport/+/#")              # filter
    + b"\x02"                      # qos 2
    + b"\x01"                      # no_local true
    + b"\x00"                      # retain_as_published false
    + b"\x01"                      # retain_handling 1
    + b"\x01" + u32(268_435_455))  # subscription_identifier Some

outgoing = (V1
    + b"\x01"                      # released true
    + s(b"a/b")                    # topic
    + s(b"hi")                     # payload
    + b"\x02"                      # qos 2
    + b"\x00"                      # retain false
    + s(b"\x01\x01")               # properties: payload format indicator 1
    + b"\x01" + u64(1_700_000_060_000))  # expires_at_ms Some

retained = (V1
    + s(b"home/temp")              # topic
    + s(b"21.5")                   # payload
    + b"\x01"                      # qos 1
    + b"\x01"                      # retain true
    + s(b"")                       # properties: none
    + b"\x00")                     # expires_at_ms None

incoming_qos2 = V1

route_queue = (V1
    + u64(0x0102030405060708)      # uid
    + s(b"sensor-7")               # client_id
    + u64(1_700_000_123_456)       # received_at_ms
    + s(b"plant/a/temp")           # topic
    + s(b"{\"t\":21}")              # payload
    + b"\x01"                      # qos 1
    + b"\x00"                      # retain false
    + s(b"")                       # properties: none
    + b"\x00")                     # expires_at_ms None

hub_route = (V1
    + s(b'{"name":"r","topic":"t","type":"rest","url":"http://h/"}'))  # definition

# `forwards` (added after version 2, at version 1: a new tree): the copy is
# the cluster's ForwardedPublish protobuf, opaque bytes to the store; here
# field 2 (topic) "a/b" and field 3 (payload) "hi".
forward = (V1
    + s(b"\x12\x03a/b\x1a\x02hi"))  # copy

# `replica_meta` (added after version 3, at version 1: a new tree): the
# session's owner and the highest outgoing seq it has shipped. The other two
# replica trees hold the values of `outgoing` (v2/outgoing.bin) and
# `incoming_qos2` (incoming_qos2.bin).
replica_meta = (V1
    + u64(3)                       # owner: node 3
    + u64(0x0102030405060708))     # max_seq

files = {
    # values this version writes: must decode
    "session.bin": session,
    "subscription.bin": subscription,
    "outgoing.bin": outgoing,
    "retained.bin": retained,
    "incoming_qos2.bin": incoming_qos2,
    "route_queue.bin": route_queue,
    "hub_route.bin": hub_route,
    "forward.bin": forward,
    # damaged values: must be rejected with an error naming the tree
    "session.unknown-version.bin": b"\x02" + session[1:],
    "subscription.bad-bool.bin": subscription[:15] + b"\x02" + subscription[16:],
    "outgoing.truncated.bin": outgoing[:14],
    "retained.trailing-byte.bin": retained + b"\x00",
    "incoming_qos2.empty.bin": b"",
    "route_queue.truncated.bin": route_queue[:20],
    "forward.trailing-byte.bin": forward + b"\x00",
    "replica_meta.bin": replica_meta,
    # damaged: cut inside max_seq; one byte too many; a version this build
    # does not know
    "replica_meta.truncated.bin": replica_meta[:12],
    "replica_meta.trailing-byte.bin": replica_meta + b"\x00",
    "replica_meta.unknown-version.bin": b"\x02" + replica_meta[1:],
}

for name, data in files.items():
    with open("v1/" + name, "wb") as f:
        f.write(data)

# Format version 2 changes `outgoing` only: a u64 uid after `released`.
V2 = b"\x02"

outgoing_v2 = (V2
    + b"\x00"                      # released false
    + u64(0x1122334455667788)      # uid
    + s(b"a/b")                    # topic
    + s(b"hi")                     # payload
    + b"\x01"                      # qos 1
    + b"\x01"                      # retain true
    + s(b"")                       # properties: none
    + b"\x00")                     # expires_at_ms None

files_v2 = {
    "outgoing.bin": outgoing_v2,
    # damaged: cut inside the uid; a version this build does not know
    "outgoing.truncated.bin": outgoing_v2[:6],
    "outgoing.unknown-version.bin": b"\x03" + outgoing_v2[1:],
}

import os
os.makedirs("v2", exist_ok=True)
for name, data in files_v2.items():
    with open("v2/" + name, "wb") as f:
        f.write(data)

# Format version 3: outgoing messages in batches, in the `outgoing_batches`
# tree under `client_id \0 batch_id:u64 kind:u8` (kind 0 messages, 1 acks).
# A batch: count, the seqs ascending, then one record per seq, each the
# version 2 outgoing value without its version byte.
V3 = b"\x03"

def record(released, uid, topic, payload, qos, retain, properties, expires):
    return (bytes([released])      # released
        + u64(uid)                 # uid
        + s(topic)                 # topic
        + s(payload)               # payload
        + bytes([qos])             # qos
        + bytes([retain])          # retain
        + s(properties)            # properties
        + (b"\x01" + u64(expires) if expires is not None else b"\x00"))  # expires_at_ms

outgoing_batch = (V3
    + u32(3)                       # count
    + u64(42) + u64(43) + u64(50)  # seqs, ascending
    + record(0, 0x1122334455667788, b"a/b", b"hi", 1, 1, b"", None)           # seq 42
    + record(1, 0x0102030405060708, b"a/b", b"", 2, 0, b"\x01\x01", 1_700_000_060_000)  # seq 43
    + record(0, 0, b"c", b"\x00\xff", 1, 0, b"", None))                       # seq 50

# acks of that batch: entry 1 (seq 43) acknowledged; one byte for 3 entries
outgoing_acks = (V3
    + s(b"\x02"))                  # acked bitmap, bit i = entry i

files_v3 = {
    "outgoing_batch.bin": outgoing_batch,
    "outgoing_acks.bin": outgoing_acks,
    # damaged: cut inside the seqs; seqs not ascending (43 before 42); a
    # version this build does not know; a bitmap of the wrong length; a bit
    # past the batch's entries
    "outgoing_batch.truncated.bin": outgoing_batch[:17],
    "outgoing_batch.unordered.bin": outgoing_batch[:5] + u64(43) + u64(42) + outgoing_batch[21:],
    "outgoing_batch.unknown-version.bin": b"\x04" + outgoing_batch[1:],
    "outgoing_acks.wrong-length.bin": V3 + s(b"\x02\x00"),
    "outgoing_acks.bit-past-end.bin": V3 + s(b"\x08"),
}

os.makedirs("v3", exist_ok=True)
for name, data in files_v3.items():
    with open("v3/" + name, "wb") as f:
        f.write(data)
