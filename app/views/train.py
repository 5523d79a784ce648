"""Train: adapt a teacher to the domain corpus, distil it into a small student, or both in one of
the paper's three orders. Shows what a launch would do (tokens, sizes, epochs) before queueing it."""

import streamlit as st

from app import budget, connections, ui
from app.connections import sessions
from app.data import corpora as corpora_data
from app.data import train as train_data
from core.checks import PRECISIONS, SEQUENCE_TOKENS
from core.configs import PRESETS, SHAPE_FIELDS
from app.data.common import duration
from core.formatting import count, parameters, speedup, table_value, where_runs_go
from core.memory import gib
from db.models import RunKind

FLASH = "train_flash"
OTHER = "other"
MODE_LABELS = {  # short enough to show whole in half the page's width
    RunKind.adaptation.value: "Adaptation only: MLM on the corpus",
    RunKind.distillation.value: "Distillation only: teacher → student",
    "adapt-then-distill": "Pipeline: adapt, then distil",
    "distill-then-adapt": "Pipeline: distil, then adapt the student",
    "adapt-and-distill": "Pipeline: adapt both, then distil (AdaLM)",
}
INIT_LABELS = {"random": "random", "teacher": "teacher layers (every k-th)", "model": "a pretrained model"}

sm = sessions()
st.title("Train")
st.caption("Adapt-and-Distill: continue masked-LM pretraining of a (vocabulary-expanded) teacher on the domain "
           "corpus, and distil it into a small student that shares its vocabulary. Runs go to a GPU worker.")


def model_picker(label: str, key: str, options: list[dict], help: str, default: str | None = None) -> str:
    """A model from the list (first: `default`, else the first), or a typed folder or hub id; the spec
    ('' when nothing is typed). The choice is kept in the session across pages."""
    labels = {c["spec"]: c["label"] for c in options}
    specs = [*labels, OTHER]
    if st.session_state.get(key) not in specs:
        st.session_state[key] = default if default in specs else specs[0]
    picked = st.selectbox(label, specs, key=key, help=help,
                          format_func=lambda s: labels.get(s, "another model: a folder or a hub id…"))
    if picked != OTHER:
        return picked
    return st.text_input(f"{label}: folder or hub id", key=f"{key}_other",
                         placeholder="a model folder under the data folder or ADAPT_DISTILL_MODEL_DIRS, or a hub id",
                         help="Hub ids (bert-base-uncased) are fetched only when ADAPT_DISTILL_ALLOW_HUB=1.").strip()


def shape_caption(shape: dict | None) -> str:
    if not shape:
        return "size unknown until the model is local"
    return (f"{shape['layers']} layers · {shape['hidden']} hidden · {shape['heads']} heads · "
            f"{shape['vocab_size']:,} tokens · {parameters(shape['parameters'])} parameters")


def teacher_section(models: list[dict]) -> tuple[str, dict | None]:
    teachers = [m for m in models if m["kind"] in ("bundled", "expansion", "adaptation")]
    asked = st.query_params.get("teacher")  # "Train with this model" on the Vocabulary page
    if asked in {m["spec"] for m in teachers}:
        st.session_state.train_teacher = asked
        del st.query_params["teacher"]
    newest = next((m["spec"] for m in teachers if m["kind"] == "expansion"), None)  # what the user just made
    teacher = model_picker("Teacher", "train_teacher", teachers,
                           "The model to adapt or distil: the bundled one, an expanded model the Vocabulary page "
                           "made, an adapted one, or any BERT folder or hub id.", default=newest)
    shape = None
    try:
        if teacher:
            shape = train_data.model_shape(sm, teacher)
            st.caption(f"Teacher: {shape_caption(shape)}")
    except Exception as exc:  # a spec that cannot work: the estimate below says why
        if ui.error_message(exc) is None:
            raise
    return teacher, shape


def preset_label(preset: str, teacher: dict | None) -> str:
    if preset in PRESETS:
        return "{} · {} heads".format(preset, PRESETS[preset][2])
    if preset != train_data.AUTO_STUDENT:  # a plan's pick
        shape = train_data.student_shape({"student": preset}, teacher)
        return f"{preset} · {shape['heads']} heads, the budget's pick" if shape else f"{preset} · the budget's pick"
    shape = train_data.student_shape({"student": preset}, teacher)
    if shape is None:
        return "half the teacher (its shape is not known yet)"
    return f"half the teacher · {train_data.shape_name(shape)}, {shape['heads']} heads"


def student_section(mode: str, models: list[dict], teacher: dict | None, teacher_spec: str) -> dict:
    """The student's choices: preset and shape, or the pretrained student to adapt."""
    st.subheader("Student", anchor=False)
    allow = {"allow_larger_student": st.checkbox(
        "Allow a student that is not smaller", key="train_allow_larger",
        help="A student with as many parameters as the teacher compresses nothing, so it is refused unless you "
             "tick this.")}
    if mode == "adapt-and-distill":
        students = [m for m in models if m["kind"] in ("bundled", "distillation", "adaptation")]
        spec = model_picker("Student to adapt", "train_student_init", students,
                            "A small pretrained BERT with the teacher's base vocabulary; it gets the teacher's new "
                            "tokens, is adapted, then learns from the adapted teacher. Its own shape is used.")
        return {"student_init": spec, **allow}
    budget.planner("train", teacher_spec, "train_student")
    left, middle = st.columns(2)  # wide enough for the whole label of each choice
    presets = budget.offered([train_data.AUTO_STUDENT, *PRESETS])
    preset = left.selectbox("Shape", presets, key="train_student", format_func=lambda p: preset_label(p, teacher),
                            help="By default the paper's ratio: half the teacher's layers and hidden width (the "
                                 "paper's 6 × 384 student comes from a 12 × 768 teacher).")
    init = middle.selectbox("Initialise from", list(INIT_LABELS), key="train_init", format_func=INIT_LABELS.get,
                            help="random; every k-th teacher layer (needs the teacher's width); or a pretrained "
                                 "model with the teacher's vocabulary (its shape is used).")
    init_spec = init
    if init == "model":
        students = [m for m in models if m["kind"] in ("bundled", "distillation", "adaptation", "expansion")]
        init_spec = model_picker("Student model", "train_init_model", students, "Its vocabulary must be the teacher's.")
    shape = None
    if init != "model" and st.checkbox("Set the shape explicitly", key="train_explicit"):
        start = train_data.student_shape({"student": preset}, teacher) or dict(zip(SHAPE_FIELDS, (3, 192, 6, 768)))
        layers, hidden, heads, intermediate = (start[k] for k in SHAPE_FIELDS)
        cols = st.columns(4)
        shape = {
            "layers": cols[0].number_input("Layers", 1, 48, layers, key="train_layers"),
            "hidden": cols[1].number_input("Hidden size", 8, 4096, hidden, step=8, key="train_hidden"),
            "heads": cols[2].number_input("Attention heads", 1, 64, heads, key="train_heads"),
            "intermediate": cols[3].number_input("Intermediate size", 8, 16384, intermediate, step=8,
                                                 key="train_intermediate"),
        }
    return {"student": preset, "init": init_spec, "shape": shape, **allow}


# Per trained stage: how its runs are named in the help, and the step of its learning-rate input.
STAGE_INPUTS = {RunKind.adaptation: ("each adaptation run", 1e-5), RunKind.distillation: ("the distillation run", 1e-4)}


def stage_inputs(kind: RunKind, steps_col, lr_col) -> dict:
    """The steps and peak learning rate of one trained stage (adapt_steps, adapt_lr...)."""
    defaults, name = train_data.TRAIN_DEFAULTS, train_data.STAGE_CHOICES[kind]
    runs, lr_step = STAGE_INPUTS[kind]
    label = kind.value.capitalize()
    return {
        f"{name}_steps": steps_col.number_input(
            f"{label} steps", 1, 10_000_000, defaults[f"{name}_steps"], step=100, key=f"train_{name}_steps",
            help=f"Optimizer steps of {runs}."),
        f"{name}_lr": lr_col.number_input(
            f"{label} lr", 1e-7, 1.0, defaults[f"{name}_lr"], step=lr_step, format="%.1e", key=f"train_{name}_lr",
            help=f"Peak learning rate of {kind.value} (default {defaults[f'{name}_lr']:.0e})."),
    }


def optimisation_section(stages: set[RunKind]) -> dict:
    defaults = train_data.TRAIN_DEFAULTS
    st.subheader("Steps and optimisation", anchor=False)
    trained = [kind for kind in train_data.STAGE_CHOICES if kind in stages]
    cols = st.columns(2 * len(trained) + 2)  # steps and lr of each stage the mode runs, no empty column
    choices = {}
    for i, kind in enumerate(trained):
        choices |= stage_inputs(kind, cols[i], cols[len(trained) + i])
    choices["batch_size"] = cols[-2].number_input("Batch size", 1, 65_536, defaults["batch_size"], key="train_batch",
                                                  help="Blocks per micro-batch.")
    choices["seq_len"] = cols[-1].number_input("Sequence length", *SEQUENCE_TOKENS, defaults["seq_len"], step=32,
                                               key="train_seq_len", help="Tokens per packed block, [CLS] and [SEP] "
                                                                         "included.")
    with st.expander("Advanced", icon=":material/tune:"):
        cols = st.columns(4)
        choices["device"] = cols[0].text_input("Device", defaults["device"], key="train_device",
                                               help="auto (CUDA when the worker has it), cpu, mps, cuda or cuda:N.")
        choices["precision"] = cols[1].selectbox("Precision", PRECISIONS, key="train_precision",
                                                 help="auto: bf16 on a GPU that has it, else fp32.")
        choices["grad_accum"] = cols[2].number_input("Gradient accumulation", 1, 1024, defaults["grad_accum"],
                                                     key="train_grad_accum", help="Micro-batches per optimizer step.")
        choices["schedule"] = cols[3].selectbox("Schedule", ["linear", "cosine", "constant"], key="train_schedule")
        cols = st.columns(4)
        choices["processes"] = cols[0].number_input(
            "GPUs", 1, 64, defaults["processes"], key="train_processes",
            help="Data-parallel processes, one per GPU of the worker (torchrun); with device cpu, CPU processes. "
                 "The global batch stays batch size x gradient accumulation, split among them.")
        cols = st.columns(4)
        choices["warmup"] = cols[0].number_input("Warmup", 0.0, 1e7, defaults["warmup"], step=0.01, format="%.2f",
                                                 key="train_warmup", help="A fraction of the steps when < 1, else "
                                                                          "a number of steps.")
        choices["seed"] = cols[1].number_input("Seed", 0, 2**31 - 1, defaults["seed"], key="train_seed")
        choices["eval_every"] = cols[2].number_input("Evaluate every", 1, 10_000_000, defaults["eval_every"],
                                                     key="train_eval_every", help="Steps between held-out losses.")
        choices["checkpoint_every"] = cols[3].number_input("Checkpoint every", 1, 10_000_000,
                                                           defaults["checkpoint_every"], key="train_checkpoint_every",
                                                           help="Steps between checkpoints (resume starts there).")
        cols = st.columns(4)
        if RunKind.adaptation in stages:
            choices["mask_probability"] = cols[0].number_input("Mask probability", 0.01, 0.99,
                                                               defaults["mask_probability"], step=0.01,
                                                               key="train_mask_probability")
            choices["whole_word"] = cols[0].checkbox("Whole-word masking", key="train_whole_word")
            choices["head_warmup"] = cols[0].number_input(
                "Head warm-up", 0.0, 1_000_000.0, float(defaults["head_warmup"]), step=0.05, key="train_head_warmup",
                help="When the teacher has no trained MLM head (the bundled model): train the new head alone, the "
                     "encoder frozen, for this fraction of the steps (< 1) or number of steps first; 0 skips it.")
        if RunKind.distillation in stages:
            choices["version"] = cols[1].selectbox("MiniLM version", ["v2", "v1"], key="train_version",
                                                   help="v2: Q-Q, K-K, V-V relations; v1: attention + value.")
            choices["teacher_layer"] = cols[2].number_input("Teacher layer", -48, 47, defaults["teacher_layer"],
                                                            key="train_teacher_layer",
                                                            help="Teacher layer taught to the student's last "
                                                                 "(-1: the last).")
            choices["mlm_weight"] = cols[3].number_input("MLM weight", 0.0, 100.0, defaults["mlm_weight"], step=0.1,
                                                         key="train_mlm_weight",
                                                         help="An extra student MLM loss; > 0 also trains the "
                                                              "student's MLM head.")
    return choices


def time_basis(estimate: dict, gpu: bool) -> str:
    """Where the time estimate comes from, in one sentence."""
    runs = estimate["speed_runs"]
    if runs:
        return (f"Time at the speed the last {count(len(runs), 'training run')} measured (run "
                f"{', '.join(map(str, runs))}): their wall time, setup included, per FLOP (6 per trained parameter "
                f"and token, 2 per teacher parameter and token), on the workers that ran them.")
    return ("Time is a first guess until a training run has finished here: a " + ("GPU" if gpu else "2-core CPU")
            + " worker trains about " + ("10 TFLOPs" if gpu else "100 GFLOPs") + " of 6 x parameters x tokens a "
            "second. The first finished run replaces it with this machine's speed.")


def estimate_section(choices: dict, corpus: dict, gpu: bool) -> None:
    estimate = train_data.training_estimate(sm, choices, corpus["words"], gpu)
    with st.container(border=True):
        st.subheader("Estimate", anchor=False)
        cols = st.columns(5)
        cols[4].metric("Time" if estimate["speed_runs"] else "Time, first guess", duration(estimate["seconds"]) or "?",
                       help=time_basis(estimate, gpu))
        cols[0].metric("Tokens per step", f"{estimate['tokens_per_step']:,}",
                       help="batch size × gradient accumulation × sequence length")
        cols[1].metric("Total tokens", f"{estimate['total_tokens']:,}", help="over all runs of this launch")
        teacher, student = estimate["teacher"], estimate["student"]
        cols[2].metric("Teacher parameters", parameters(teacher["parameters"] if teacher else None),
                       help="as a BertForMaskedLM, from the model's configuration")
        if student and student.get("parameters"):
            ratio = teacher["parameters"] / student["parameters"] if teacher else None
            if ratio is not None:
                ratio = f"{speedup(ratio)} smaller" if ratio >= 1.05 else f"{speedup(1 / ratio)} the teacher's size"
            cols[3].metric("Student parameters", parameters(student["parameters"]), delta=ratio,
                           delta_color="off", delta_arrow="off")
        st.dataframe(
            [{"run": i + 1, "does": s["what"], "steps": s["steps"], "tokens": s["tokens"], "time": duration(s["seconds"]),
              "trained parameters": table_value("parameters", s["parameters"]), "epochs": s["epochs"],
              "memory": gib(s["memory"]) if s["memory"] else "?"} for i, s in enumerate(estimate["stages"])],
            hide_index=True, width="stretch", key="train_estimate",
            column_config={"tokens": st.column_config.NumberColumn(format="localized"),
                           "steps": st.column_config.NumberColumn(format="localized"),
                           "trained parameters": ui.number_column("parameters"),
                           "epochs": st.column_config.NumberColumn(format="%.2f")},
        )
        st.caption(f"Epochs count the corpus's {corpus['words']:,} words as its tokens, a rough proxy: WordPiece "
                   f"splits rare words into several pieces, so the corpus has more tokens and the true epochs are "
                   f"fewer. Parameters are counted from the model configurations (a BERT with an MLM head). Memory is "
                   f"estimated from the shapes and the batch; a run that would not fit in the worker's memory is "
                   f"refused when you launch it.")
        st.caption(time_basis(estimate, gpu))
        for problem in estimate["problems"]:
            st.caption(f":orange[:material/warning: {problem}]")


# --- the form ------------------------------------------------------------------------------------
by_id = ui.corpora_or_stop(corpora_data.list_corpora(sm))
models = train_data.model_choices(sm)

top = st.columns(2)
corpus_id = ui.choose("Corpus", by_id, "train_corpus",
                      lambda i: f"{i} · {by_id[i]['name']} ({by_id[i]['words']:,} words)", top[0])
st.session_state.setdefault("train_mode", "adapt-then-distill")
mode = top[1].selectbox("What to run", list(MODE_LABELS), key="train_mode", format_func=MODE_LABELS.get,
                        help="Adaptation continues the teacher's masked-LM pretraining on the corpus; distillation "
                             "teaches a small student (MiniLM) to mimic the teacher. The paper compares three "
                             "orders: adapt the teacher then distil it; distil then adapt the student; or adapt the "
                             "teacher and a small pretrained student, then distil (adapt-and-distill, the best).")
stages = {kind for kind, _ in train_data.mode_stages(mode)}

teacher_spec, teacher_shape = teacher_section(models)
choices = {"mode": mode, "corpus_id": corpus_id, "teacher": teacher_spec}
if RunKind.distillation in stages:
    choices |= student_section(mode, models, teacher_shape, teacher_spec)
choices |= optimisation_section(stages)
health = connections.queue_health()
estimate_section(choices, by_id[corpus_id], any(w.get("cuda") for w in health.get("pool") or []
                                               if "gpu" in w["queues"]))

if health["reachable"]:
    level, line = where_runs_go(health["pool"])
    getattr(st, level)(line, icon=":material/hourglass:" if level == "warning" else ":material/memory:")
if st.button("Launch", key="train_launch", type="primary", icon=":material/rocket_launch:"):
    with ui.reported():
        runs = train_data.start_training(sm, connections.redis(), choices)
        first = runs[0]
        steps = " → ".join(f"{r['run_id']} {r['kind']}" for r in runs if r["kind"] != "pipeline")
        what = f"Pipeline {first['run_id']} ({mode}) queued: runs {steps}." if first["kind"] == "pipeline" \
            else f"Run {first['run_id']} ({first['kind']}) queued."
        ui.flash(FLASH, "success", what)
        st.session_state.train_launched = first["run_id"]
        st.rerun()
ui.show_flash(FLASH)
if "train_launched" in st.session_state:
    st.page_link("views/runs.py", label=f"Follow run {st.session_state.train_launched} on the Runs page",
                 icon=":material/monitoring:", query_params={"run": str(st.session_state.train_launched)})
