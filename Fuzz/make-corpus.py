#!/usr/bin/env python3
"""Writes the seed corpora of the OpAMP fuzz targets (opamp-session, opamp-transport) from real messages.

Uses the OpAMP protobuf classes that ship with the Python opentelemetry-opamp-client (the interop tests'
requirement): `python3 Fuzz/make-corpus.py`. The output is committed; run it again only to change seeds.
"""
import gzip
import os
import struct

from opentelemetry._opamp.proto import anyvalue_pb2, opamp_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
UID = bytes.fromhex("0195f7a24c1e7b3d9f001234567890ab")
OTHER = bytes.fromhex("0195f7a24c1e7b3d9f00aaaaaaaaaaaa")


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


def hello(uid=UID, seq=0, service="otelcol-sampler"):
    m = opamp_pb2.AgentToServer(instance_uid=uid, sequence_num=seq, capabilities=0x1 | 0x2 | 0x4 | 0x8 | 0x800 | 0x1000 | 0x4000)
    m.agent_description.identifying_attributes.extend([kv("service.name", service), kv("service.instance.id", "s-0")])
    m.agent_description.non_identifying_attributes.extend([kv("host.name", "sampler-0"), kv("os.type", "linux")])
    m.health.healthy = True
    m.health.start_time_unix_nano = 1_800_000_000_000_000_000
    m.health.status = "StatusOK"
    m.health.component_health_map["pipeline:traces"].healthy = True
    return m


def status(uid=UID, seq=1, state=opamp_pb2.RemoteConfigStatuses_APPLIED, error=""):
    m = opamp_pb2.AgentToServer(instance_uid=uid, sequence_num=seq)
    m.remote_config_status.last_remote_config_hash = bytes(32)
    m.remote_config_status.status = state
    m.remote_config_status.error_message = error
    m.effective_config.config_map.config_map["collector.yaml"].body = b"receivers: {}\n"
    m.effective_config.config_map.config_map["collector.yaml"].content_type = "text/yaml"
    return m


def csr(uid=UID, seq=2):
    m = opamp_pb2.AgentToServer(instance_uid=uid, sequence_num=seq)
    m.connection_settings_request.opamp.certificate_request.csr = b"-----BEGIN CERTIFICATE REQUEST-----\nMIHq\n-----END CERTIFICATE REQUEST-----\n"
    return m


def components(uid=UID, seq=3):
    m = opamp_pb2.AgentToServer(instance_uid=uid, sequence_num=seq)
    m.available_components.hash = b"\x01" * 32
    m.available_components.components["processors"].sub_component_map["tail_sampling"].metadata.extend([kv("code.namespace", "x")])
    return m


def bye(uid=UID, seq=4):
    m = opamp_pb2.AgentToServer(instance_uid=uid, sequence_num=seq)
    m.agent_disconnect.SetInParent()
    return m


def record(op, slot, payload=b""):
    return bytes([op, slot]) + struct.pack(">H", len(payload)) + payload


def write(target, name, data):
    folder = os.path.join(HERE, target, "corpus")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# opamp-session: op 0 WebSocket message, 1 HTTP message, 2 close, 3 desired config, 4 time + sweep, 5 disconnect.
s = lambda m: m.SerializeToString()
write("opamp-session", "ws-lifecycle", record(0, 0, s(hello())) + record(3, 0, b"receivers: {}\n") + record(0, 0, s(status())) + record(0, 0, s(components())) + record(0, 0, s(bye())) + record(2, 0))
write("opamp-session", "http-polling", record(1, 1, s(hello(seq=0))) + record(1, 1, s(status(seq=1))) + record(4, 0, b"") + record(1, 1, s(status(seq=2, state=opamp_pb2.RemoteConfigStatuses_FAILED, error="bad"))))
write("opamp-session", "takeover", record(0, 0, s(hello())) + record(0, 1, s(hello(seq=0))) + record(0, 0, s(status(seq=1))) + record(0, 2, s(hello(seq=7))) + record(2, 1))
write("opamp-session", "two-agents", record(0, 0, s(hello())) + record(0, 1, s(hello(uid=OTHER, service="otelcol-lb"))) + record(5, 0) + record(0, 0, s(hello(seq=0))) + record(4, 0, b"\x00" * 200) + record(2, 0) + record(2, 1))
write("opamp-session", "new-uid", record(0, 0, s(opamp_pb2.AgentToServer(instance_uid=b"", sequence_num=0))) + record(0, 0, s(hello(uid=b"01ARZ3NDEKTSV4RRFFQ69G5FAV"))) + record(0, 3, s(csr())))
write("opamp-session", "full-state", record(0, 0, s(opamp_pb2.AgentToServer(instance_uid=UID, sequence_num=5, flags=1))) + record(0, 0, s(hello(seq=9))))

# opamp-transport: first byte = read size (0: all at once; top bit: a server at its connection limit), then
# what a client sends.
def post(body, extra=b"", path=b"/v1/opamp"):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: policyd\r\nContent-Type: application/x-protobuf\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


upgrade = (b"GET /v1/opamp HTTP/1.1\r\nHost: policyd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
msg = b"\x00" + s(hello())
write("opamp-transport", "http-post", b"\x00" + post(s(hello())))
write("opamp-transport", "http-post-split", b"\x07" + post(s(hello())) + post(s(status())))
write("opamp-transport", "http-gzip", b"\x00" + post(gzip.compress(s(hello()), mtime=0), b"Content-Encoding: gzip\r\n"))
write("opamp-transport", "http-chunked", b"\x05" + b"POST /v1/opamp HTTP/1.1\r\nHost: p\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(s(hello())) + s(hello()) + b"\r\n0\r\n\r\n")
write("opamp-transport", "http-wrong", b"\x00" + b"GET /metrics HTTP/1.1\r\nHost: p\r\n\r\n" + b"PUT /v1/opamp HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n")
write("opamp-transport", "ws-messages", b"\x00" + upgrade + frame(2, msg) + frame(2, b"\x00" + s(status())) + frame(9, b"ping") + frame(1, b"text") + frame(8, b"\x03\xe8bye"))
write("opamp-transport", "ws-fragmented", b"\x03" + upgrade + frame(2, msg[:10], fin=False) + frame(0, msg[10:]) + frame(2, b"\x00\xff\xff"))
write("opamp-transport", "ws-no-header", b"\x00" + upgrade + frame(2, s(hello())) + frame(2, b"\x00" + s(bye())))
write("opamp-transport", "at-limit", b"\x80" + post(s(hello())) + upgrade)
write("opamp-transport", "ws-silent", b"\x00" + upgrade + frame(9, b"are you there"))
write("opamp-transport", "ws-big", b"\x00" + upgrade + frame(2, b"\x00" + b"\x0a\x10" + UID + b"\x62" + b"\xa0\x9c\x01" + b"x" * 20000))
