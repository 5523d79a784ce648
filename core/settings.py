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


def corpora_dir() -> Path:
    path = home() / "corpora"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def token_cache_dir() -> Path:
    """Tokenized corpora, one memory-mapped stream per corpus and tokenizer (core.tokens)."""
    path = home() / "cache" / "tokens"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tasks_dir() -> Path:
    path = home() / "tasks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_dirs() -> list[Path]:
    """ADAPT_DISTILL_MODEL_DIRS: colon-separated folders the dashboard may read models from, beside
    the data folder and the bundled model."""
    value = os.environ.get("ADAPT_DISTILL_MODEL_DIRS", "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


HUB_ENV = "ADAPT_DISTILL_ALLOW_HUB"


def hub_allowed() -> bool:
    """Whether a hub id may be fetched from the model hub (ADAPT_DISTILL_ALLOW_HUB=1); off by default."""
    return os.environ.get(HUB_ENV, "").strip().lower() in ("1", "true", "yes")
