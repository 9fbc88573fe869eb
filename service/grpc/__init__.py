"""The gRPC API (grpc.aio): the servicer, one error interceptor, the server; stubs in pb/ (generated)."""
