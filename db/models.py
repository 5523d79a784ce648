"""Typed models of everything the product tracks."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Enum, Float, ForeignKey, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON, datetime: DateTime(timezone=True)}


class RunKind(str, enum.Enum):
    analysis = "analysis"
    expansion = "expansion"
    adaptation = "adaptation"
    distillation = "distillation"
    pipeline = "pipeline"
    evaluation = "evaluation"  # fine-tune a model on a labelled task, several seeds
    benchmark = "benchmark"  # speed (and intrinsic measures) of several models side by side
    experiment = "experiment"  # the paper's comparison on the user's data: a parent of many runs
    corpus_import = "corpus_import"  # a file of the server's import folder read into a corpus by a worker
    plan = "plan"  # student shapes timed against a latency budget on the worker that would serve them


class RunStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    abandoned = "abandoned"  # its worker died; resume continues from the last checkpoint

    @property
    def finished(self) -> bool:
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled, RunStatus.abandoned)


def _enum(cls):
    # Stored as plain strings: adding a member needs no ALTER TYPE on PostgreSQL.
    return Enum(cls, native_enum=False, length=20, validate_strings=True)


class Corpus(Base):
    __tablename__ = "corpora"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    source_name: Mapped[str] = mapped_column(String(500))
    format: Mapped[str] = mapped_column(String(10))
    bytes: Mapped[int] = mapped_column(BigInteger)
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    documents: Mapped[int] = mapped_column(BigInteger)
    words: Mapped[int] = mapped_column(BigInteger)
    distinct_words: Mapped[int] = mapped_column(BigInteger)
    duplicate_documents: Mapped[int] = mapped_column(BigInteger)
    mean_length: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    analyses: Mapped[list[VocabAnalysis]] = relationship(back_populates="corpus", cascade="all, delete-orphan", passive_deletes=True)


run_dependencies = Table(
    "run_dependencies",
    Base.metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("depends_on_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[RunKind] = mapped_column(_enum(RunKind))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.queued, index=True)
    params: Mapped[dict] = mapped_column(default=dict)
    stage: Mapped[str] = mapped_column(String(100), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(100))
    queue: Mapped[str | None] = mapped_column(String(50))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    eta_guess: Mapped[bool | None] = mapped_column(Boolean)  # the ETA rests on costs not measured yet
    latest_loss: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200))

    depends_on: Mapped[list[Run]] = relationship(
        secondary=run_dependencies,
        primaryjoin=lambda: Run.id == run_dependencies.c.run_id,
        secondaryjoin=lambda: Run.id == run_dependencies.c.depends_on_id,
    )
    metrics: Mapped[list[Metric]] = relationship(back_populates="run", cascade="all, delete-orphan", passive_deletes=True)
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="run", cascade="all, delete-orphan", passive_deletes=True)


class VocabAnalysis(Base):
    __tablename__ = "vocab_analyses"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"), index=True)
    base_model: Mapped[str] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer)
    max_added: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)
    min_frequency: Mapped[int] = mapped_column(Integer, default=2)
    base_vocab_size: Mapped[int | None] = mapped_column(Integer)
    hidden_size: Mapped[int | None] = mapped_column(Integer)
    picked_vocab_size: Mapped[int | None] = mapped_column(Integer)
    threshold_reached: Mapped[bool | None]
    tokens_path: Mapped[str | None] = mapped_column(Text)
    documents: Mapped[int | None] = mapped_column(BigInteger)
    word_types: Mapped[int | None] = mapped_column(BigInteger)
    notes: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship()
    corpus: Mapped[Corpus] = relationship(back_populates="analyses")
    points: Mapped[list[CurvePointRow]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", passive_deletes=True,
        order_by=lambda: CurvePointRow.vocab_size,
    )


class CurvePointRow(Base):
    __tablename__ = "curve_points"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("vocab_analyses.id", ondelete="CASCADE"), index=True)
    vocab_size: Mapped[int] = mapped_column(Integer)
    added_tokens: Mapped[int] = mapped_column(Integer)
    log_occurrence: Mapped[float] = mapped_column(Float)
    relative_gain: Mapped[float | None] = mapped_column(Float)
    tokens_per_word: Mapped[float] = mapped_column(Float)
    split_word_share: Mapped[float] = mapped_column(Float)
    embedding_params: Mapped[int] = mapped_column(BigInteger)

    analysis: Mapped[VocabAnalysis] = relationship(back_populates="points")


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="metrics")


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="artifacts")


class Task(Base):
    """A labelled task (classification or NER), stored like a corpus under its content hash."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    source_names: Mapped[dict] = mapped_column(default=dict)  # split -> the file it came from
    labels: Mapped[list] = mapped_column(default=list)
    sizes: Mapped[dict] = mapped_column(default=dict)  # split -> examples
    label_counts: Mapped[dict] = mapped_column(default=dict)  # split -> label -> count
    origin: Mapped[dict] = mapped_column(default=dict)  # split -> given or carved from train
    has_pair: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelRecord(Base):
    """A model folder the product knows: 'bundled', the output of a run ('run:ID') or a local folder."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    spec: Mapped[str] = mapped_column(String(1024), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # bundled, expansion, adaptation, distillation, fine-tuned, folder
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    path: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    vocab_size: Mapped[int | None] = mapped_column(Integer)
    layers: Mapped[int | None] = mapped_column(Integer)
    hidden: Mapped[int | None] = mapped_column(Integer)
    heads: Mapped[int | None] = mapped_column(Integer)
    intermediate: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run | None] = relationship()
    evaluations: Mapped[list[Evaluation]] = relationship(back_populates="model", cascade="all, delete-orphan",
                                                         passive_deletes=True)
    measurements: Mapped[list[Measurement]] = relationship(back_populates="model", cascade="all, delete-orphan",
                                                           passive_deletes=True)


class Evaluation(Base):
    """A model fine-tuned on a task with several seeds (its run holds status and progress)."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(50))  # the one dev selection and tables use
    seeds: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict] = mapped_column(default=dict)
    results: Mapped[dict] = mapped_column(default=dict)  # name -> mean, name_std, per_seed, curves
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship()
    model: Mapped[ModelRecord] = relationship(back_populates="evaluations")
    task: Mapped[Task] = relationship()


class Measurement(Base):
    """Speed or intrinsic measures of a model, in a context (device and shapes, or a corpus)."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # speed, intrinsic
    context: Mapped[str] = mapped_column(String(200))
    values: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[ModelRecord] = relationship(back_populates="measurements")
