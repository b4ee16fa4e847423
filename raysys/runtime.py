"""Ray start-up and the translation of errors raised inside Ray tasks into one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from raysys.config import RayConfig
from raysys.errors import RaysysError, SourceError


def ensure_ray(cfg: RayConfig) -> None:
    """Start or join Ray unless this process is already connected."""
    import ray

    if ray.is_initialized():
        return
    address = None if cfg.address in (None, "local") else cfg.address
    ray.init(
        address=address,
        num_cpus=cfg.num_cpus if address is None else None,
        include_dashboard=False if address is None else None,
        ignore_reinit_error=True,
        logging_level="WARNING",
    )


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain, looking through Ray's task-error wrappers."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RaysysError) and not _is_ray_wrapper(error):
            return error
        inner = getattr(error, "cause", None) or error.__cause__ or error.__context__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def _is_ray_wrapper(error: BaseException) -> bool:
    from ray.exceptions import RayError

    return isinstance(error, RayError)


@contextlib.contextmanager
def user_errors(label: str) -> Iterator[None]:
    """Re-raise errors from Ray tasks as clean one-line raysys errors.

    A raysys error raised in a task comes back as itself; an I/O or parse error of the source
    (for example a malformed CSV row) becomes a :class:`SourceError` that starts with ``label``.
    """
    try:
        yield
    except RaysysError as error:
        cause = root_cause(error)
        if cause is error and not _is_ray_wrapper(error):
            raise
        raise _clean(cause, label) from None
    except Exception as error:
        cause = root_cause(error)
        if isinstance(cause, RaysysError):
            raise _clean(cause, label) from None
        if _from_io(cause):
            raise SourceError(f"{label}: {_first_line(cause)}") from None
        raise


def _clean(cause: BaseException, label: str) -> RaysysError:
    if isinstance(cause, RaysysError) and not _is_ray_wrapper(cause):
        cause.args = (_first_line(cause), *cause.args[1:])  # Ray appends retry advice to messages
        return cause
    return SourceError(f"{label}: {_first_line(cause)}")


def _from_io(error: BaseException) -> bool:
    """Whether an error is about reading data (a file, a format), not a bug in raysys."""
    import pyarrow as pa

    return isinstance(error, (pa.ArrowException, OSError, UnicodeDecodeError)) or type(error) is ValueError


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
