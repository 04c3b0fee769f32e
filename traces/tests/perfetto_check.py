# Parses a trace written by PerfettoWriter with the perfetto wheel's generated protos, expands
# its compressed_packets batches (zlib), fails on any field the protos do not know, and prints
# how many batches, events and tracks of each kind it holds.
# Run by traces/tests/perfetto_python.rs (needs `pip install perfetto protobuf`).
import sys
import zlib
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from google.protobuf import unknown_fields

# Perfetto refuses a packet of 512 KiB or more.
MAX_PACKET_BYTES = 512 * 1024

def unknown(msg, path="trace"):
    found = []
    if len(unknown_fields.UnknownFieldSet(msg)):
        found.append(path)
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        # protobuf 6+ has is_repeated; older versions only the label.
        if hasattr(field, "is_repeated"):
            repeated = field.is_repeated
        else:
            repeated = field.label == field.LABEL_REPEATED
        items = value if repeated else [value]
        for i, item in enumerate(items):
            found += unknown(item, f"{path}.{field.name}[{i}]")
    return found

def expand(trace):
    """The trace with every compressed_packets batch replaced by the packets it holds, and
    how many batches there were."""
    out = pb.Trace()
    batches = 0
    for p in trace.packet:
        if not p.HasField("compressed_packets"):
            out.packet.append(p)
            continue
        assert len(p.ListFields()) == 1, "a compressed packet holds its batch alone"
        size = p.ByteSize()
        assert size < MAX_PACKET_BYTES, f"compressed packet {batches} is {size} bytes"
        inner = pb.Trace()
        inner.ParseFromString(zlib.decompress(p.compressed_packets))
        assert not any(q.HasField("compressed_packets") for q in inner.packet), "nested batch"
        out.packet.extend(inner.packet)
        batches += 1
    return out, batches

raw = pb.Trace()
raw.ParseFromString(open(sys.argv[1], "rb").read())
trace, batches = expand(raw)
bad = unknown(trace)
assert not bad, f"unknown fields at {bad[:5]}"
kinds = {"compressed": batches}
for p in trace.packet:
    if p.HasField("track_event"):
        t = pb.TrackEvent.Type.Name(p.track_event.type)
        kinds[t] = kinds.get(t, 0) + 1
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        k = "process" if d.HasField("process") else "thread" if d.HasField("thread") else "counter" if d.HasField("counter") else "plain"
        kinds[k] = kinds.get(k, 0) + 1
print(" ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
