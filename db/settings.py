"""Where things live. Read from the environment at call time so tests and processes
can point at their own folders."""

import os
from pathlib import Path


def home() -> Path:
    """The data folder: SQLite file, corpora, runs and artifacts (ADAPT_DISTILL_HOME)."""
    root = Path(os.environ.get("ADAPT_DISTILL_HOME") or Path.home() / ".adapt-distill").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def database_url() -> str:
    """DATABASE_URL, else a SQLite file in home()."""
    return os.environ.get("DATABASE_URL") or f"sqlite:///{home() / 'adapt-distill.db'}"


def data_folder(*parts: str) -> Path:
    """A folder inside home(), made when missing."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def corpora_dir() -> Path:
    return data_folder("corpora")


def runs_dir() -> Path:
    return data_folder("runs")


def token_cache_dir() -> Path:
    """Tokenized corpora, one memory-mapped stream per corpus and tokenizer (core.train.tokens)."""
    return data_folder("cache", "tokens")


def tasks_dir() -> Path:
    return data_folder("tasks")


def model_dirs() -> list[Path]:
    """ADAPT_DISTILL_MODEL_DIRS: colon-separated folders the dashboard may read models from, beside
    the data folder and the bundled model."""
    value = os.environ.get("ADAPT_DISTILL_MODEL_DIRS", "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


IMPORT_DIR_ENV = "ADAPT_DISTILL_IMPORT_DIR"


def import_dir() -> Path | None:
    """ADAPT_DISTILL_IMPORT_DIR: the server-side folder whose files the dashboard imports as corpora
    on a worker (worker.imports); None when unset."""
    value = os.environ.get(IMPORT_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


UPLOAD_MB_ENV = "ADAPT_DISTILL_UPLOAD_MB"
DEFAULT_UPLOAD_MB = 200  # Streamlit's own default for server.maxUploadSize


def upload_mb() -> int:
    """ADAPT_DISTILL_UPLOAD_MB: the largest browser upload in megabytes (default 200)."""
    value = os.environ.get(UPLOAD_MB_ENV, "").strip()
    if not value:
        return DEFAULT_UPLOAD_MB
    try:
        mb = int(value)
    except ValueError:
        mb = 0
    if mb < 1:
        from core.errors import ConfigError

        raise ConfigError(f"{UPLOAD_MB_ENV}={value} must be a whole number of megabytes, at least 1 (default "
                          f"{DEFAULT_UPLOAD_MB}); put larger files in the import folder ({IMPORT_DIR_ENV})")
    return mb
