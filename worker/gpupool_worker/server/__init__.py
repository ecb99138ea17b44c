"""The gRPC transport: converters between protobuf and engine types, the servicer, and the server."""
