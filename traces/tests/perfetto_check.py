# Parses a trace written by PerfettoWriter with the perfetto wheel's generated protos, fails on any
# field they do not know, and prints how many events and tracks of each kind it holds.
# Run by traces/tests/perfetto_python.rs (needs `pip install perfetto protobuf`).
import sys
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from google.protobuf import unknown_fields

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

trace = pb.Trace()
trace.ParseFromString(open(sys.argv[1], "rb").read())
bad = unknown(trace)
assert not bad, f"unknown fields at {bad[:5]}"
kinds = {}
for p in trace.packet:
    if p.HasField("track_event"):
        t = pb.TrackEvent.Type.Name(p.track_event.type)
        kinds[t] = kinds.get(t, 0) + 1
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        k = "process" if d.HasField("process") else "thread" if d.HasField("thread") else "counter" if d.HasField("counter") else "plain"
        kinds[k] = kinds.get(k, 0) + 1
print(" ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
