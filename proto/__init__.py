"""Wire contracts only: the .proto files and the code generated from them.

Generated modules (``*_pb2.py``, ``*_pb2_grpc.py``, ``*_pb2.pyi``) are never edited by hand;
regenerate them with ``make proto``. ``stat.proto`` is upstream Knative's Stat and
WireStatMessage(s), field for field; ``kdp.proto`` is our own gRPC control plane.
Nothing else lives here: conversions belong to the package that owns the domain type.
"""
