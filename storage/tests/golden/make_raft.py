"""Writes the golden values of the raft trees, storage format version 1.

Written by hand from the layout in storage/src/raft_records.rs and the field
numbers of raft-rs's eraftpb.proto (protobuf wire format: a key byte is
field_number << 3 | wire_type; 0 = varint, 2 = length-delimited), not with
the Rust encoder, so the golden test catches an encoder that drifts. Run from
this directory: python3 make_raft.py. Existing files must not change; a new
format version gets a new directory.
"""
import struct

def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)

V1 = b"\x01"

entry = (V1
    + u64(5)                        # term prefix
    + b"\x10\x05"                   # Entry.term = 5 (field 2, varint)
    + b"\x18\x06"                   # Entry.index = 6 (field 3, varint)
    + b"\x22\x05" + b"batch")       # Entry.data (field 4, 5 bytes)

hard_state = (V1
    + b"\x08\x07"                   # term = 7
    + b"\x10\x02"                   # vote = 2
    + b"\x18\x06")                  # commit = 6

truncated = (V1
    + u64(5)                        # index
    + u64(5))                       # term

snapshot = (V1
    + u32(1)                        # one data chunk
    + b"\x0a\x06"                   # conf_state (field 1, 6 bytes)
    + b"\x08\x01\x08\x02\x08\x03"   #   voters 1, 2, 3 (field 1, unpacked,
                                    #   as rust-protobuf 2 writes them)
    + b"\x10\x05"                   # index = 5
    + b"\x18\x05")                  # term = 5

# The same with the voters packed, as protobuf 3 encoders write them.
snapshot_packed = (V1
    + u32(1)
    + b"\x0a\x05"                   # conf_state (field 1, 5 bytes)
    + b"\x0a\x03\x01\x02\x03"       #   voters [1, 2, 3], packed (field 1)
    + b"\x10\x05"
    + b"\x18\x05")

chunk = V1 + b"state"

files = {
    # values this version writes: must decode
    "raft_entry.bin": entry,
    "raft_hard_state.bin": hard_state,
    "raft_truncated.bin": truncated,
    "raft_snapshot.bin": snapshot,
    "raft_snapshot_chunk.bin": chunk,
    # another encoding of the same value: must decode, is never written
    "raft_snapshot.packed.bin": snapshot_packed,
    # damaged values: must be rejected with an error naming the tree
    "raft_entry.truncated.bin": entry[:12],
    "raft_entry.term-mismatch.bin": V1 + u64(4) + entry[9:],
    "raft_hard_state.unknown-version.bin": b"\x02" + hard_state[1:],
    "raft_truncated.short.bin": truncated[:9],
    "raft_snapshot.bad-protobuf.bin": V1 + u32(1) + b"\x0a\x7f",
}

for name, data in files.items():
    with open(f"v1/{name}", "wb") as f:
        f.write(data)
