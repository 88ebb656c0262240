#!/usr/bin/python3
"""python3-grpcio (gRPC C-core, its own HPACK encoder) over an insecure
channel on loopback: a unary service checking a bearer token in metadata,
two calls with the right token and one with a wrong one. capture.sh
records it as grpc.client.bin / grpc.server.bin."""
import sys
from concurrent import futures
import grpc

port = int(sys.argv[1])
ident = lambda b: b

def say_hello(request, context):
    md = dict(context.invocation_metadata())
    if md.get("authorization") != "Bearer grpc-live-token-5e2":
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
    return b"hello " + request

handler = grpc.method_handlers_generic_handler(
    "helloworld.Greeter",
    {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello, ident, ident)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
    call = ch.unary_unary("/helloworld.Greeter/SayHello", ident, ident)
    md = [("authorization", "Bearer grpc-live-token-5e2")]
    print(call(b"one", metadata=md, timeout=10))
    print(call(b"two", metadata=md, timeout=10))
    try:
        call(b"three", metadata=[("authorization", "Bearer wrong")], timeout=10)
    except grpc.RpcError as e:
        print(e.code())
server.stop(None)
