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
