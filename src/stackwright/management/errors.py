"""Domain errors of the management engine, each carrying its CloudStack error codes.

Services raise these; the API middleware renders them as the CloudStack error envelope
(`errorcode` is also the HTTP status). Anything that is not an `ApiError` is logged with
a request id and answered as a 530 internal error, never as a traceback.
"""


class ApiError(Exception):
    """Base class: `errorcode` is the HTTP status, `cserrorcode` the exception class code."""

    errorcode = 530
    cserrorcode = 4250

    def __init__(self, text: str, *, errorcode: int | None = None, cserrorcode: int | None = None,
                 uuid_list: list[dict[str, str]] | None = None) -> None:
        super().__init__(text)
        self.text = text
        if errorcode is not None:
            self.errorcode = errorcode
        if cserrorcode is not None:
            self.cserrorcode = cserrorcode
        self.uuid_list = uuid_list or []


class InvalidParameterValue(ApiError):
    errorcode = 431
    cserrorcode = 4350


class ParameterError(ApiError):
    """Missing parameter, paging errors: a plain ServerApiException in CloudStack."""

    errorcode = 431
    cserrorcode = 9999


class AuthenticationError(ApiError):
    errorcode = 401
    cserrorcode = None


class PermissionDenied(ApiError):
    errorcode = 531
    cserrorcode = 4365


class LoginFailed(ApiError):
    errorcode = 531
    cserrorcode = 4365


class MethodNotAllowed(ApiError):
    errorcode = 405
    cserrorcode = 9999


class Throttled(ApiError):
    errorcode = 429
    cserrorcode = 9999


class UnsupportedAction(ApiError):
    errorcode = 432
    cserrorcode = 9999


class CloudRuntimeError(ApiError):
    """Refusals CloudStack answers with 530 (most "cannot delete" guards)."""

    errorcode = 530
    cserrorcode = 4250


class ResourceUnavailable(ApiError):
    errorcode = 534
    cserrorcode = 4380


class ResourceInUse(ApiError):
    errorcode = 536
    cserrorcode = 4375


class ResourceAllocationError(ApiError):
    errorcode = 535
    cserrorcode = 4370


class InsufficientCapacity(ApiError):
    errorcode = 533
    cserrorcode = 4325


class DatabaseUnavailable(ApiError):
    """The database cannot be reached; the request changed nothing and may be retried."""

    errorcode = 530
    cserrorcode = 4250


class NotFound(InvalidParameterValue):
    """An id that names no entity of the expected kind."""
