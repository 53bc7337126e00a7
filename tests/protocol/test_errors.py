"""The MeshError tree and ERROR_TABLE: one class per wire code, one code per class (docs/protocol.md §7)."""

from __future__ import annotations

import pytest

from meshcore_sdk.protocol import errors
from meshcore_sdk.protocol.errors import ERROR_TABLE, ErrorCode, MeshError, error_from_code

MESH_ERROR_CLASSES = [
    obj
    for obj in (getattr(errors, name) for name in errors.__all__)
    if isinstance(obj, type) and issubclass(obj, MeshError)
]


def tree(root: type[MeshError]) -> set[type[MeshError]]:
    """``root`` and every class below it that the errors module defines."""
    found = {root}
    for sub in root.__subclasses__():
        if sub.__module__ == errors.__name__:
            found |= tree(sub)
    return found


def test_every_class_of_the_tree_is_exported() -> None:
    """The tree in the errors module is exactly the MeshError classes it exports."""
    assert tree(MeshError) == set(MESH_ERROR_CLASSES)


def test_every_class_has_its_own_code() -> None:
    """No two classes share a wire code (a subclass that forgot to set ``code`` would)."""
    codes = [cls.code for cls in MESH_ERROR_CLASSES]

    assert sorted(codes) == sorted(set(codes))


def test_error_table_is_a_bijection_between_codes_and_classes() -> None:
    """Every ErrorCode maps to the one class that declares it, and every class is reached."""
    assert set(ERROR_TABLE) == set(ErrorCode)
    assert {code: cls for code, cls in ERROR_TABLE.items() if cls.code is not code} == {}
    assert set(ERROR_TABLE.values()) == set(MESH_ERROR_CLASSES)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_from_code_builds_the_class_with_its_data(code: ErrorCode) -> None:
    """A wire error turns into its class, carrying the message and every piece of data."""
    error = error_from_code(
        code.value, "it broke", request_id="r-1", worker_id="node-a", retry_after_s=1.5, retryable=False
    )

    assert type(error) is ERROR_TABLE[code]
    assert (error.code, error.message, error.request_id, error.worker_id, error.retry_after_s, error.retryable) == (
        code,
        "it broke",
        "r-1",
        "node-a",
        1.5,
        False,
    )


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (ErrorCode.NO_CAPACITY, True),
        (ErrorCode.RATE_LIMITED, True),
        (ErrorCode.WORKER_LOST, True),
        (ErrorCode.CONNECTION_LOST, True),
        (ErrorCode.BAD_REQUEST, False),
        (ErrorCode.MALFORMED_FRAME, False),
        (ErrorCode.MODEL_NOT_FOUND, False),
    ],
)
def test_retryable_defaults_to_the_class_policy(code: ErrorCode, retryable: bool) -> None:
    """Without a retryable hint from the wire, the class decides whether a retry may succeed."""
    assert error_from_code(code, "m").retryable is retryable


@pytest.mark.parametrize("code", ["brand_new_code", "", "NO_CAPACITY"])
def test_an_unknown_code_becomes_a_plain_mesh_error(code: str) -> None:
    """A code from a newer peer still raises something in the tree: MeshError itself."""
    error = error_from_code(code, "from the future", request_id="r-1")

    assert (type(error), error.code, error.message, error.request_id) == (
        MeshError,
        ErrorCode.MESH,
        "from the future",
        "r-1",
    )


@pytest.mark.parametrize("cls", MESH_ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_http_status_is_a_client_or_server_error(cls: type[MeshError]) -> None:
    """Every class answers HTTP with a 4xx or 5xx status."""
    assert 400 <= cls.http_status <= 599


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.MODEL_NOT_FOUND, 404),
        (ErrorCode.BAD_REQUEST, 400),
        (ErrorCode.NO_CAPACITY, 503),
        (ErrorCode.CONTEXT_LENGTH_EXCEEDED, 400),
        (ErrorCode.WORKER_LOST, 502),
        (ErrorCode.ENGINE_CRASHED, 502),
        (ErrorCode.RATE_LIMITED, 429),
        (ErrorCode.AUTHENTICATION, 401),
        (ErrorCode.PERMISSION_DENIED, 403),
        (ErrorCode.FRAME_TOO_LARGE, 413),
        (ErrorCode.TIMEOUT, 504),
    ],
)
def test_http_status_matches_the_spec(code: ErrorCode, status: int) -> None:
    """The statuses docs/protocol.md §6 names, and the usual ones for auth, limits and timeouts."""
    assert ERROR_TABLE[code].http_status == status


def test_str_of_an_error_is_its_message() -> None:
    """``str(error)`` is the human sentence alone, with none of the attached data."""
    error = error_from_code(ErrorCode.NO_CAPACITY, "no READY worker serves gemma-3-270m", retry_after_s=2.0)

    assert (str(error), error.args) == ("no READY worker serves gemma-3-270m", ("no READY worker serves gemma-3-270m",))


@pytest.mark.parametrize(
    ("code", "builtin"),
    [
        (ErrorCode.TIMEOUT, TimeoutError),
        (ErrorCode.CONFIG, ValueError),
        (ErrorCode.STREAM_CLOSED, RuntimeError),
    ],
)
def test_some_errors_are_also_builtin_errors(code: ErrorCode, builtin: type[Exception]) -> None:
    """Timeouts, bad settings and closed streams can also be caught as the builtin a caller expects."""
    assert isinstance(error_from_code(code, "m"), builtin)
