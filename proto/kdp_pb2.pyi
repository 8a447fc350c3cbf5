from proto import stat_pb2 as _stat_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_SERVE: _ClassVar[Mode]
    MODE_PROXY: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_SERVE: Mode
MODE_PROXY: Mode

class StatBatch(_message.Message):
    __slots__ = ("sender", "messages", "poke")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    POKE_FIELD_NUMBER: _ClassVar[int]
    sender: str
    messages: _containers.RepeatedCompositeFieldContainer[_stat_pb2.WireStatMessage]
    poke: bool
    def __init__(self, sender: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_stat_pb2.WireStatMessage, _Mapping]]] = ..., poke: _Optional[bool] = ...) -> None: ...

class PushSummary(_message.Message):
    __slots__ = ("accepted", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: int
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("namespace", "revision", "desired_pods", "excess_burst_capacity", "mode", "num_activators", "in_panic", "ready_pods", "stable_concurrency", "panic_concurrency", "stable_rps", "failure", "unix_nanos")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DESIRED_PODS_FIELD_NUMBER: _ClassVar[int]
    EXCESS_BURST_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NUM_ACTIVATORS_FIELD_NUMBER: _ClassVar[int]
    IN_PANIC_FIELD_NUMBER: _ClassVar[int]
    READY_PODS_FIELD_NUMBER: _ClassVar[int]
    STABLE_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PANIC_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    STABLE_RPS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: str
    desired_pods: int
    excess_burst_capacity: int
    mode: Mode
    num_activators: int
    in_panic: bool
    ready_pods: int
    stable_concurrency: float
    panic_concurrency: float
    stable_rps: float
    failure: str
    unix_nanos: int
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[str] = ..., desired_pods: _Optional[int] = ..., excess_burst_capacity: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., num_activators: _Optional[int] = ..., in_panic: _Optional[bool] = ..., ready_pods: _Optional[int] = ..., stable_concurrency: _Optional[float] = ..., panic_concurrency: _Optional[float] = ..., stable_rps: _Optional[float] = ..., failure: _Optional[str] = ..., unix_nanos: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("subscriber",)
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    def __init__(self, subscriber: _Optional[str] = ...) -> None: ...

class RevisionEndpoints(_message.Message):
    __slots__ = ("namespace", "revision", "ready", "not_ready", "container_concurrency", "timeout_seconds", "response_start_timeout_seconds", "idle_timeout_seconds", "protocol", "target", "failure", "deleted", "service", "configuration", "snapshot_end")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_START_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: str
    ready: _containers.RepeatedScalarFieldContainer[str]
    not_ready: _containers.RepeatedScalarFieldContainer[str]
    container_concurrency: int
    timeout_seconds: float
    response_start_timeout_seconds: float
    idle_timeout_seconds: float
    protocol: str
    target: float
    failure: str
    deleted: bool
    service: str
    configuration: str
    snapshot_end: bool
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[str] = ..., ready: _Optional[_Iterable[str]] = ..., not_ready: _Optional[_Iterable[str]] = ..., container_concurrency: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., response_start_timeout_seconds: _Optional[float] = ..., idle_timeout_seconds: _Optional[float] = ..., protocol: _Optional[str] = ..., target: _Optional[float] = ..., failure: _Optional[str] = ..., deleted: _Optional[bool] = ..., service: _Optional[str] = ..., configuration: _Optional[str] = ..., snapshot_end: _Optional[bool] = ...) -> None: ...

class RevisionSpec(_message.Message):
    __slots__ = ("namespace", "revision", "service", "annotations", "container_concurrency", "reachable", "deleted")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: str
    service: str
    annotations: _containers.ScalarMap[str, str]
    container_concurrency: int
    reachable: bool
    deleted: bool
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[str] = ..., service: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ..., container_concurrency: _Optional[int] = ..., reachable: _Optional[bool] = ..., deleted: _Optional[bool] = ...) -> None: ...

class PodCounts(_message.Message):
    __slots__ = ("namespace", "revision", "ready", "not_ready", "pending", "terminating", "failure")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    TERMINATING_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: str
    ready: int
    not_ready: int
    pending: int
    terminating: int
    failure: str
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[str] = ..., ready: _Optional[int] = ..., not_ready: _Optional[int] = ..., pending: _Optional[int] = ..., terminating: _Optional[int] = ..., failure: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ok", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("namespace", "revision")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: str
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("namespace", "revision", "replicas")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: str
    replicas: int
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class ScaleResponse(_message.Message):
    __slots__ = ("ok", "error", "replicas")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    replicas: int
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class TrafficTarget(_message.Message):
    __slots__ = ("revision", "percent")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    revision: str
    percent: float
    def __init__(self, revision: _Optional[str] = ..., percent: _Optional[float] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("namespace", "service", "traffic")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    service: str
    traffic: _containers.RepeatedCompositeFieldContainer[TrafficTarget]
    def __init__(self, namespace: _Optional[str] = ..., service: _Optional[str] = ..., traffic: _Optional[_Iterable[_Union[TrafficTarget, _Mapping]]] = ...) -> None: ...

class RouteTable(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...
