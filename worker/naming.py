"""What a run and its model are called: a model's name says its part in the paper's strategies
('run:8 · adapt-then-distill student L3-H192 of the adapted teacher (run:4)'), a run's subject what
it makes or judges ('evaluation of run:12'). The catalogue, the pages and the CLI all use these."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import object_session

from core.formatting import printable
from core.model_io import BUNDLED
from db.models import Run, RunKind, Task, VocabAnalysis
from worker.specs import RUN_PREFIX, ModelSpec


def short_spec(spec: str | None) -> str:
    """A folder by its name; bundled, hub ids and run:ID as they are."""
    return Path(spec).name if spec and Path(spec).is_absolute() else str(spec)


TEACHER, GENERAL, ADAPTED_STUDENT = "adapted teacher", "general student", "adapted student"
# In a pipeline, the role of each step by the pipeline's strategy and the step's kind.
PIPELINE_ROLES = {("adapt-then-distill", RunKind.distillation): "adapt-then-distill",
                  ("distill-then-adapt", RunKind.distillation): GENERAL,
                  ("distill-then-adapt", RunKind.adaptation): "distill-then-adapt",
                  ("adapt-and-distill", RunKind.distillation): "adapt-and-distill"}


def role(run: Run) -> str | None:
    """The part a run's model plays in the paper's strategies: 'adapted teacher', 'general student',
    'adapted student' or a strategy's name for its final student; None for a run on its own. An
    experiment's steps carry it; a pipeline's steps take it from the pipeline's strategy."""
    params = run.params or {}
    if params.get("strategy"):
        return params["strategy"]
    session = object_session(run)
    parent = session.get(Run, run.parent_id) if run.parent_id is not None and session is not None else None
    if parent is None or parent.kind != RunKind.pipeline:
        return None
    strategy = (parent.params or {}).get("strategy")
    found = PIPELINE_ROLES.get((strategy, run.kind))
    if found is None and run.kind == RunKind.adaptation:  # adapt-* pipelines adapt the teacher, and a student
        found = TEACHER if params.get("model") == (parent.params or {}).get("teacher") else ADAPTED_STUDENT
    return found


def _shape(params: dict) -> str:
    return f" L{params['layers']}-H{params['hidden']}" if params.get("layers") and params.get("hidden") else ""


def _noun(part: str | None, default: str) -> str:
    """'adapt-then-distill student', 'general student', 'adapted teacher'; `default` for no role."""
    if not part:
        return default
    return part if part.endswith(("student", "teacher")) else f"{part} student"


def _what(run: Run) -> str:
    """A run's model in a few words, as another model's name refers to it: 'the adapted teacher
    (run:4)', 'the general student L3-H192 (run:6)', 'the expanded teacher (run:3, 33,522 tokens)'."""
    ref, params = f"{RUN_PREFIX}{run.id}", run.params or {}
    if run.kind == RunKind.expansion:
        size = params.get("vocab_size")
        return f"the expanded teacher ({ref}" + (f", {size:,} tokens)" if isinstance(size, int) else ")")
    if run.kind == RunKind.adaptation:
        return f"the {_noun(role(run), TEACHER)} ({ref})"
    if run.kind == RunKind.evaluation:
        return f"the fine-tuned model ({ref})"
    return f"the {_noun(role(run), 'student')}{_shape(params)} ({ref})"


def model_name(run: Run) -> str:
    """How a run's model is shown everywhere (tables, charts, selectors, cards): its reference and
    what it is, 'run:8 · adapt-then-distill student L3-H192 of the adapted teacher (run:4)',
    'run:4 · adapted teacher: the expanded teacher (run:3, 33,522 tokens)'."""
    params, part = run.params or {}, role(run)
    ref = f"{RUN_PREFIX}{run.id}"
    session = object_session(run)

    def source(spec: str | None) -> str:
        run_id = ModelSpec.parse(str(spec)).run_id if spec else None
        found = session.get(Run, run_id) if run_id is not None and session is not None else None
        if found is not None:
            return _what(found)
        return "the bundled MiniLM" if spec == BUNDLED else short_spec(spec)

    if run.kind == RunKind.expansion:
        size = params.get("vocab_size")
        grown = f"{size:,} tokens" if isinstance(size, int) else "the picked size"
        analysis = session.get(VocabAnalysis, params.get("analysis_id")) if session is not None else None
        base = source(analysis.base_model) if analysis is not None else "the teacher"
        return f"{ref} · expanded teacher: {base} with a vocabulary of {grown}"
    if run.kind == RunKind.adaptation:
        return f"{ref} · {_noun(part, TEACHER)}: {source(params.get('model'))}"
    if run.kind == RunKind.evaluation:  # the model it kept (evaluate --keep)
        task = session.get(Task, params.get("task_id")) if session is not None else None
        on = f"'{printable(task.name)}'" if task is not None else f"task {params.get('task_id')}"
        return f"{ref} · fine-tuned on {on}: {source(params.get('model'))}"
    if run.kind != RunKind.distillation:
        return f"{ref} · {run.kind.value}"
    return f"{ref} · {_noun(part, 'student')}{_shape(params)} of {source(params.get('teacher'))}"


def run_subject(run: Run) -> str:
    """What a run is about, in a few words, as a list of runs shows it beside its kind: the model an
    evaluation or a benchmark judged ('of run:8'), the model a training run makes ('adapt-then-distill
    student L3-H192'), the corpus an analysis counts, a pipeline's strategy, an experiment's name."""
    params = run.params or {}
    if run.kind == RunKind.evaluation:
        return f"of {short_spec(params.get('model'))}" + (", kept" if params.get("keep") else "")
    if run.kind == RunKind.benchmark:
        return "of " + ", ".join(short_spec(m) for m in params.get("models") or [])
    if run.kind == RunKind.expansion:
        size = params.get("vocab_size")
        return "expanded teacher" + (f", {size:,} tokens" if isinstance(size, int) else "")
    if run.kind == RunKind.adaptation:
        return _noun(role(run), TEACHER)
    if run.kind == RunKind.distillation:
        return _noun(role(run), "student") + _shape(params)
    if run.kind == RunKind.analysis:
        return f"of corpus {params.get('corpus_id')}"
    if run.kind == RunKind.corpus_import:
        return printable(params.get("name") or Path(str(params.get("file") or "")).name)
    if run.kind == RunKind.pipeline:
        return str(params.get("strategy") or "")
    if run.kind == RunKind.plan:
        return f"for {params.get('latency_ms', 0):g} ms ({short_spec(params.get('teacher'))})"
    return printable(str(params.get("name") or ""))
