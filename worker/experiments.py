"""Experiments: the paper's comparison on the user's own corpus and task, in one launch.

An experiment is a parent run over a graph of ordinary runs:

    vocabulary analysis -> expansion E (the analysis's pick) of the teacher T
    adaptation of E                                  -> the adapted teacher
    distillation of T into a student S               -> the general student G (or --student-init)
    adaptation of G, with E's new tokens             -> distill-then-adapt
    distillation of the adapted teacher into a fresh S -> adapt-then-distill
    distillation of the adapted teacher into adapted G -> adapt-and-distill
    an evaluation (fine-tuning, N seeds) of every model, then one benchmark of all of them

Every adaptation gets the same steps and every distillation the same steps (the budget). The
general student stands in for the general small model (MiniLM) the paper starts
distill-then-adapt and adapt-and-distill from; it is distilled once and shared."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.configs import STRATEGIES, VocabConfig
from core.errors import ConfigError
from core.formatting import points_difference, printable
from core.judge.settings import BENCH_DEFAULTS
from db import store
from db.models import Corpus, Evaluation, Run, RunKind, Task, VocabAnalysis
from worker import contamination, evaluation, kinds, naming, run_params, training, vocabulary
from worker.progress import ACTIVE, experiment_progress, wall_seconds
from worker.specs import RUN_PREFIX, ModelSpec

EXPAND_CHOICES = ("pick", "none")
BASE, ADAPTED, GENERAL = "base teacher", "adapted teacher", "general student"
ROLE_ORDER = (ADAPTED, BASE, GENERAL, *STRATEGIES)  # the benchmark's order: the adapted teacher is the reference


def parse_budget(text: str | None) -> tuple[int | None, int | None]:
    """'2000' (each adaptation and distillation) or '2000,5000' (adaptation, distillation steps)."""
    if not text:
        return None, None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        steps = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"budget '{text}': give steps, e.g. 2000 or 2000,5000 (adaptation, distillation)") from None
    if len(steps) not in (1, 2) or min(steps) < 1:
        raise ConfigError(f"budget '{text}': give one or two positive step counts (adaptation, distillation)")
    return steps[0], steps[-1]


def _expansion_of(session: Session, spec: str) -> Run | None:
    run_id = ModelSpec.parse(spec).run_id
    run = store.get(session, Run, run_id) if run_id is not None else None
    return run if run is not None and run.kind == RunKind.expansion else None


def create_experiment(sessions: sessionmaker[Session], corpus_id: int, task_id: int, teacher: str,
                      strategies: tuple[str, ...] | list[str] = STRATEGIES, student: dict | None = None,
                      student_init: str | None = None, adapt: dict | None = None, distill: dict | None = None,
                      finetune: dict | None = None, bench: dict | None = None, expand: str | int = "pick",
                      vocab: dict | None = None, name: str | None = None) -> list[Run]:
    """Record an experiment and its runs (nothing is queued here); [experiment, runs in order].
    Every setting is checked before the first row is written."""
    strategies = tuple(dict.fromkeys(strategies))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(f"strategies must be some of {', '.join(STRATEGIES)}; got {', '.join(unknown) or 'none'}")
    if not (expand in EXPAND_CHOICES or (isinstance(expand, int) and expand > 0)):
        raise ConfigError(f"expand must be pick, none or a number of tokens to add, got {expand}")
    adapt, distill, finetune = dict(adapt or {}), {**(distill or {}), **(student or {})}, dict(finetune or {})
    vocab = dict(vocab or {})
    run_params.adapt_config(adapt)
    run_params.distill_config(distill)
    evaluation.bench_params(bench)
    vocab_config = VocabConfig(**vocab)
    with sessions.begin() as session:
        store.get(session, Corpus, corpus_id)
        evaluation.check_finetune(session, task_id, finetune)
        teacher = ModelSpec.parse(teacher).check(session)
        if student_init:
            student_init = ModelSpec.parse(student_init).check(session)
        expansion = _expansion_of(session, teacher)
        base = store.get(session, VocabAnalysis, expansion.params["analysis_id"]).base_model if expansion else teacher
        # the students are checked against the teacher now: nothing is recorded for a shape that is refused
        run_params.student_params(session, base, {**distill, "init": student_init} if student_init else distill)
    with sessions.begin() as session:
        parent = store.create_run(session, RunKind.experiment, {
            "name": printable(name) if name else f"experiment on corpus {corpus_id}, task {task_id}", "corpus_id": corpus_id,
            "task_id": task_id, "teacher": teacher, "strategies": list(strategies), "student": student or {},
            "student_init": student_init, "adapt": adapt, "distill": {k: v for k, v in distill.items()
                                                                      if k not in (student or {})},
            "finetune": finetune, "bench": bench or {}, "expand": expand, "vocab": vocab})
        parent_id = parent.id
    runs: list[Run] = []

    def child(run: Run) -> Run:
        runs.append(run)
        return run

    expanded, analysis_id = teacher, None
    if expansion is None and expand != "none":
        analysis, reused = vocabulary.create_analysis(sessions, corpus_id, teacher, vocab_config)
        analysis_id = analysis.id
        if not reused:  # a new analysis belongs to the experiment; a reused one is only waited for
            with sessions.begin() as session:
                analysis_run = store.get(session, Run, analysis.run_id)
                analysis_run.parent_id = parent_id
            child(analysis_run)
        size = vocabulary.PICK if expand == "pick" else analysis.base_vocab_size + int(expand)
        made = vocabulary.create_expansion(sessions, analysis.id, size, parent_id=parent_id,
                                        threshold=vocab.get("threshold"))
        expanded = f"{RUN_PREFIX}{child(made).id}"
    after_expansion = [r for r in runs if r.kind == RunKind.expansion]

    def adaptation(model: str, deps: list[Run], **extra) -> Run:
        return child(training.create_adaptation(sessions, corpus_id, model, {**adapt, **extra}, parent_id, deps))

    def distillation(teacher_spec: str, deps: list[Run], **extra) -> Run:
        return child(training.create_distillation(sessions, corpus_id, teacher_spec, {**distill, **extra},
                                                  parent_id, deps))

    members = [{"role": BASE, "model": base, "run": None}]
    adapted = adaptation(expanded, after_expansion, strategy="adapted teacher")
    members.append({"role": ADAPTED, "model": f"{RUN_PREFIX}{adapted.id}", "run": adapted.id})
    needs_general = {"distill-then-adapt", "adapt-and-distill"} & set(strategies)
    general_run = adapted_general = None
    if needs_general:
        if student_init:
            general = student_init
        else:
            general_run = distillation(base, [], strategy=GENERAL)
            general = f"{RUN_PREFIX}{general_run.id}"
        members.append({"role": GENERAL, "model": general, "run": general_run.id if general_run else None})
        adapted_general = adaptation(general, [r for r in (general_run, *after_expansion) if r is not None],
                                     align_to=expanded, strategy="distill-then-adapt")
        if "distill-then-adapt" in strategies:
            members.append({"role": "distill-then-adapt", "model": f"{RUN_PREFIX}{adapted_general.id}",
                            "run": adapted_general.id})
    if "adapt-then-distill" in strategies:
        made = distillation(f"{RUN_PREFIX}{adapted.id}", [adapted], strategy="adapt-then-distill")
        members.append({"role": "adapt-then-distill", "model": f"{RUN_PREFIX}{made.id}", "run": made.id})
    if "adapt-and-distill" in strategies:
        made = distillation(f"{RUN_PREFIX}{adapted.id}", [adapted, adapted_general], strategy="adapt-and-distill",
                            init=f"{RUN_PREFIX}{adapted_general.id}")
        members.append({"role": "adapt-and-distill", "model": f"{RUN_PREFIX}{made.id}", "run": made.id})
    by_id = {r.id: r for r in runs}
    for member in members:
        deps = [by_id[member["run"]]] if member["run"] else []
        member["evaluation"] = child(evaluation.create_evaluation(sessions, member["model"], task_id, finetune,
                                                                  parent_id, deps)).id
    ordered = sorted(members, key=lambda m: ROLE_ORDER.index(m["role"]))
    model_runs = [by_id[m["run"]] for m in members if m["run"]]
    benchmark = child(evaluation.create_benchmark(sessions, [m["model"] for m in ordered], bench, corpus_id,
                                                  parent_id, model_runs))
    with sessions.begin() as session:
        parent = store.get(session, Run, parent_id)
        costs = {str(r.id): kinds.cost(session, store.get(session, Run, r.id)) for r in runs}
        parent.params = {**parent.params, "members": members, "benchmark_run": benchmark.id,
                         "analysis_id": analysis_id, "expanded_teacher": expanded,
                         "step_costs": {k: v for k, v in costs.items() if v}}
        return [parent] + [store.get(session, Run, r.id) for r in runs]


def rerun(sessions: sessionmaker[Session], experiment_id: int) -> list[Run]:
    """A new experiment with the settings of an earlier one."""
    with sessions.begin() as session:
        run = store.get(session, Run, experiment_id)
        if run.kind != RunKind.experiment:
            raise ConfigError(f"run {experiment_id} is a {run.kind.value}, not an experiment")
        p = dict(run.params)
    # a benchmark recorded before batch-1 latency needed 30 forwards gets them now
    bench = {**p["bench"], "latency_repeats": max(p["bench"].get("latency_repeats") or 0,
                                                  BENCH_DEFAULTS["latency_repeats"])}
    return create_experiment(sessions, p["corpus_id"], p["task_id"], p["teacher"], p["strategies"], p["student"],
                             p["student_init"], p["adapt"], p["distill"], p["finetune"], bench, p["expand"],
                             p["vocab"], f"{p['name']} (again)")


def _member_row(session: Session, member: dict, bench_id: int | None) -> dict:
    """One row of the table: a model with its role, score, size, speed and measures."""
    from worker.catalogue import ensure_model

    record = ensure_model(session, member["model"])
    evaluation_ = session.scalar(select(Evaluation).where(Evaluation.run_id == member["evaluation"]))
    results = (evaluation_.results if evaluation_ is not None else None) or {}
    test = results.get("test", {})
    metric = evaluation_.metric if evaluation_ is not None else "score"
    measured = next((m for m in record.measurements if m.kind == "speed" and m.run_id == bench_id), None)
    speed = measured.values if measured is not None else {}
    intrinsic = next((m.values for m in sorted(record.measurements, key=lambda m: m.id, reverse=True)
                      if m.kind == "intrinsic"), {})
    model_run = store.get(session, Run, member["run"]) if member["run"] else None
    return {
        "role": member["role"], "model": record.spec, "name": record.name, "model_id": record.id,
        "model_status": model_run.status.value if model_run else "succeeded",
        "evaluation_run": member["evaluation"],
        "evaluation_status": evaluation_.run.status.value if evaluation_ is not None else "task deleted",
        "metric": metric, "score": test.get(metric), "score_std": test.get(f"{metric}_std"),
        "score_ci95": (test.get("ci95") or {}).get(metric),
        "seeds": test.get("seeds"), "per_seed": [s.get(metric) for s in test.get("per_seed", [])],
        "converged": results.get("converged"), "parameters": record.parameters, "size_bytes": record.size_bytes,
        "speed_context": measured.context if measured is not None else None, "noisy": speed.get("noisy"),
        "latency_ms_p50": speed.get("latency_ms_p50"), "latency_ms_p95": speed.get("latency_ms_p95"),
        "throughput_per_s": speed.get("throughput_per_s"), "speedup": speed.get("speedup_vs_first"),
        "throughput_speedup": speed.get("throughput_speedup_vs_first"),
        "perplexity": intrinsic.get("perplexity"), "tokens_per_word": intrinsic.get("tokens_per_word"),
    }


def experiment_view(session: Session, experiment_id: int) -> dict:
    """The experiment's table: a row per model with its role, score (mean and std over seeds),
    parameters, size, latency, throughput and speed-up against the adapted teacher, and its runs."""
    run = store.get(session, Run, experiment_id)
    if run.kind != RunKind.experiment:
        raise ConfigError(f"run {experiment_id} is a {run.kind.value}, not an experiment")
    p = run.params
    rows = [_member_row(session, member, p.get("benchmark_run")) for member in p.get("members", [])]
    rows.sort(key=lambda r: ROLE_ORDER.index(r["role"]))
    _add_differences(session, rows)
    task = session.get(Task, p.get("task_id"))
    floor = baseline(task, rows[0]["metric"], p.get("finetune", {}).get("exclude_labels") or ()) \
        if task is not None and rows and rows[0]["metric"] in ("accuracy", "macro_f1", "micro_f1") else None
    children = store.children(session, experiment_id)
    progress, eta, guess = (experiment_progress(run, children) if run.status in ACTIVE
                            else (run.progress, None, False))
    return {"experiment_id": experiment_id, "name": p.get("name"), "status": run.status.value, "stage": run.stage,
            "contamination": contamination.for_experiment(session, p),  # task text found in the corpora
            "progress": progress, "eta_seconds": eta, "eta_guess": guess, "error": run.error, "settings": {k: v for k, v in p.items() if k != "members"},
            "rows": rows, "baseline": floor, **judgement(rows, floor), "runs": [{"run_id": c.id, "kind": c.kind.value, "status": c.status.value,
                                    "stage": c.stage, "progress": c.progress,
                                    "seconds": wall_seconds(c),
                                    "strategy": (c.params or {}).get("strategy"),
                                    "subject": naming.run_subject(c)} for c in children]}


# --- what the scores support -------------------------------------------------------------------------

_COUNTS: dict[tuple, object] = {}  # (evaluation run, its finish time) -> its test example counts
_DIFFERENCES: dict[tuple, dict | None] = {}  # (base evaluation, evaluation, metric) -> paired difference


class _Lazy:
    """A value made on first use."""

    def __init__(self, make):
        self.make, self.made = make, None

    def __call__(self):
        if self.made is None:
            self.made = self.make()
        return self.made


def _example_counts(evaluation_: Evaluation, task: _Lazy):
    """The per-example counts of a finished evaluation's test predictions (None without them);
    kept in memory, as a finished evaluation does not change."""
    from core.judge.finetune import example_counts

    run = evaluation_.run
    key = (run.id, run.finished_at)
    if key not in _COUNTS:
        seeds = [s["seed"] for s in (evaluation_.results or {}).get("seeds") or []]
        predictions = evaluation.test_predictions(run.id, seeds)
        _COUNTS[key] = example_counts(task(), predictions, evaluation.finetune_config(evaluation_.settings)) \
            if predictions else None
    return _COUNTS[key]


def baseline(task: Task, metric: str, exclude=()) -> dict | None:
    """What always answering train's most common label scores on test (classification only):
    the floor a model must clear to have learnt anything."""
    from core.judge.metrics import classification_scores

    counts = task.label_counts or {}
    if task.type != "classification" or not counts.get("train") or not counts.get("test"):
        return None
    majority = max(task.labels, key=lambda label: (counts["train"].get(label, 0), label))
    gold = [label for label, n in counts["test"].items() for _ in range(n)]
    scores = classification_scores(gold, [majority] * len(gold), task.labels, exclude)
    return {"label": majority, "score": scores[metric], "accuracy": scores["accuracy"], "test_examples": len(gold)}


def _add_differences(session: Session, rows: list[dict]) -> None:
    """Each row's paired difference against the base teacher on the same test examples and seeds
    ("difference" and its "difference_ci95"), once both evaluations have succeeded."""
    from core.judge.metrics import paired_difference
    from core.judge.tasks import load_task

    for row in rows:
        row["difference"] = row["difference_ci95"] = None
    base = next((r for r in rows if r["role"] == BASE and r["evaluation_status"] == "succeeded"), None)
    if base is None:
        return
    evaluations = {r["role"]: session.scalar(select(Evaluation).where(Evaluation.run_id == r["evaluation_run"]))
                   for r in rows if r["evaluation_status"] == "succeeded"}
    task = _Lazy(lambda: load_task(evaluations[BASE].task.path))  # read only for counts not yet kept
    reference = _example_counts(evaluations[BASE], task)
    if reference is None:
        return
    base_key = (evaluations[BASE].run.id, evaluations[BASE].run.finished_at)
    for row in rows:
        if row["role"] == BASE or row["role"] not in evaluations:
            continue
        run = evaluations[row["role"]].run
        key = (base_key, run.id, run.finished_at, row["metric"])
        if key not in _DIFFERENCES:  # 1,000 resamples: once per pair of finished evaluations
            counts = _example_counts(evaluations[row["role"]], task)
            _DIFFERENCES[key] = paired_difference(counts, reference, row["metric"]) if counts is not None else None
        found = _DIFFERENCES[key]
        if found is not None:
            row["difference"], row["difference_ci95"] = found["difference"], found["ci95"]


def _points(value: float) -> str:
    return f"{100 * abs(value):.1f} point{'' if round(100 * abs(value), 1) == 1 else 's'}"


def verdict(row: dict) -> str | None:
    """What the paired difference against the base teacher supports, in words (None before it exists)."""
    if row.get("difference_ci95") is None:
        return None
    low, high = row["difference_ci95"]
    interval = points_difference(row["difference"], row["difference_ci95"]).split(" ", 1)[1]
    if low > 0 or high < 0:
        better = "better" if low > 0 else "worse"
        return f"the {row['role']} is {better} than the base teacher by {_points(row['difference'])} {interval}"
    return f"the {row['role']} and the base teacher are not distinguishable with this budget {interval}"


def judgement(rows: list[dict], floor: dict | None = None) -> dict:
    """The experiment's summary: each row's verdict, and whether the budget is too small to conclude
    anything (a member still improving at its last epoch, or a score interval that overlaps the base
    teacher's); a model whose interval reaches down to the majority-label floor is named too."""
    for row in rows:
        row["verdict"] = verdict(row)
        interval = row.get("score_ci95")
        row["at_floor"] = bool(floor and interval and interval[0] <= floor["score"])
    scored = [r for r in rows if r["score"] is not None]
    base = next((r for r in scored if r["role"] == BASE), None)
    reasons = []
    unconverged = [r["role"] for r in scored if r["converged"] is False]
    if unconverged:
        reasons.append(f"{', '.join(unconverged)} still improved at the last fine-tuning epoch")
    if base is not None:
        # the paired interval where there is one: two models' own intervals can overlap while the
        # difference on the same examples and seeds is clear; their overlap only where it is missing
        undecided = [r["role"] for r in scored if r is not base and (
            r["difference_ci95"][0] <= 0 <= r["difference_ci95"][1] if r.get("difference_ci95") else
            r.get("score_ci95") and base.get("score_ci95") and r["score_ci95"][0] <= base["score_ci95"][1]
            and base["score_ci95"][0] <= r["score_ci95"][1])]
        if undecided:
            reasons.append(f"{', '.join(undecided)} cannot be told apart from the base teacher (the 95% interval "
                           f"of the difference holds zero)")
    floored = [r["role"] for r in scored if r.get("at_floor")]
    if floored:
        reasons.append(f"{', '.join(floored)} cannot be told apart from always answering '{floor['label']}' "
                       f"({floor['score']:.4f})")
    summary = "The budget is too small to conclude anything: " + "; ".join(reasons) + "." if reasons else None
    one_seed = bool(scored) and all(r["seeds"] == 1 for r in scored)
    return {"summary": summary, "budget_too_small": bool(reasons),
            "seed_note": "1 seed: the intervals cover the choice of test examples, not how much another "
                         "fine-tuning seed would move a score" if one_seed else None}


def list_experiments(session: Session) -> list[dict]:
    return [{"experiment_id": r.id, "name": r.params.get("name"), "status": r.status.value, "stage": r.stage,
             "progress": r.progress, "created": r.created_at.isoformat() if r.created_at else None}
            for r in store.rows(session, Run, kind=RunKind.experiment, limit=500)]
