"""Typed errors. Each is raised where the problem is found and carries a message that
says what to do; entry points (CLI, dashboard, worker) turn it into one line."""


class AdaptDistillError(Exception):
    """A problem the user can fix. The message is shown as is, without a traceback."""


class CorpusError(AdaptDistillError):
    """The corpus file cannot be used (empty, binary, undecodable, wrong field...)."""


class TaskError(AdaptDistillError):
    """A labelled task file cannot be used (missing column or tag, unseen labels, empty split...)."""


class ModelError(AdaptDistillError):
    """The base model cannot be found or is not a BERT-family WordPiece model."""


class ConfigError(AdaptDistillError):
    """An option has a value that cannot work."""


class NotFound(AdaptDistillError):
    """A corpus, analysis or run id that does not exist."""


class Cancelled(AdaptDistillError):
    """Long work stopped because its cancel check said so."""


class Superseded(Cancelled):
    """Long work stopped because another attempt of the same run has taken it over: it stops where it
    is and writes nothing more (no checkpoint, no progress, no outcome)."""


class DiskFull(AdaptDistillError):
    """A write failed because the device (or the user's quota) is full."""


DISK_FULL_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT, as an OSError or as the message of a library's own error (safetensors,
    SQLite: "database or disk is full")."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return any(marker in text for marker in ("No space left on device", "Disk quota exceeded",
                                             "database or disk is full"))


def user_error(exc: BaseException) -> AdaptDistillError | None:
    """The error as one a user can act on, or None for a bug. A full disk is the user's to fix,
    wherever it is met."""
    if isinstance(exc, AdaptDistillError):
        return exc
    if is_disk_full(exc):
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        return DiskFull(f"no space left on device{where}: free some space (or point ADAPT_DISTILL_HOME at a larger "
                        f"disk) and try again")
    return None
