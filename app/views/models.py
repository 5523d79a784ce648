"""Models: every model with its size, score and speed, the score-against-latency chart with the
Pareto front, one model's lineage and evaluations with its zip download, two models side by side,
and evaluations and benchmarks to launch."""

import streamlit as st

from app import charts, connections, ui
from app.connections import sessions
from app.data import corpora as corpora_data
from app.data import models as models_data
from app.data import tasks as tasks_data
from core.folder_kinds import FINE_TUNED, is_onnx_folder
from core.formatting import (count, latency_ms, parameters, score_interval, seeds_spread, throughput,
                             tokens_per_word)

FLASH = "models_flash"
NO_TASK = -1

sm = sessions()
st.title("Models")
st.caption("Every model adapt-distill knows: the bundled one, every model a run wrote, and folders you evaluated. "
           "Scores are test scores of the best dev epoch, mean ± standard deviation over fine-tuning seeds; speed "
           "is the encoder's latency at batch 1 and throughput at a batch, measured side by side, and only "
           "measurements taken in the same context (device, sequence length, batch, threads) are compared.")
ui.show_flash(FLASH)

rows = models_data.list_models(sm)
to_come = models_data.models_to_come(sm)
if to_come:
    st.caption(":material/hourglass_top: To come, listed here once their runs succeed: " + ", ".join(
        f"run {r['run_id']} ({r['kind']}, {r['status']})" for r in to_come) + ".")
tasks = tasks_data.list_tasks(sm)
task_names = {t["task_id"]: f"{t['task_id']} · {t['name']} ({t['type']})" for t in tasks}
by_spec = {m["spec"]: m for m in rows}

# --- the table and the chart, for one task -------------------------------------------------------------
task_options = list(task_names) or [NO_TASK]
if st.session_state.get("models_task") not in task_options:
    st.session_state.models_task = task_options[0]
task_column, context_column = st.columns(2)
task_id = task_column.selectbox("Scores on task", task_options, key="models_task",
                                format_func=lambda t: task_names.get(t, "no task yet: add one on the Tasks page"))
# Speed only within one context: latencies on another device, shape or thread count are another table.
measurements = models_data.speed_measurements(sm)
contexts = models_data.speed_contexts(rows, measurements, task_id)
context_options = contexts or [None]
if st.session_state.get("models_speed_context") not in context_options:
    st.session_state.models_speed_context = context_options[0]
context = context_column.selectbox(
    "Speed measured in", context_options, key="models_speed_context",
    format_func=lambda c: "no speed measured yet" if c is None else models_data.context_label(c, measurements),
    help="Device · sequence length · batch sizes · torch threads. Only measurements taken in the same context are "
         "compared: choose another to see its models.")
speed = models_data.speed_in(measurements, context)
table = models_data.table_rows(rows, None if task_id == NO_TASK else task_id, speed)
st.dataframe(
    [{k: v for k, v in r.items() if k != "spec"} for r in table], hide_index=True, width="stretch", placeholder="",
    key="models_table",
    column_config={
        "id": st.column_config.NumberColumn("id", format="%d", width="small"),
        "model": st.column_config.TextColumn("model", width="large", pinned=True),
        "parameters": ui.number_column("parameters", "parameters"),
        "size": ui.number_column("size", "size"),
        "score": st.column_config.NumberColumn("score", format="%.4f", help="test score, mean over seeds"),
        "95% interval": st.column_config.TextColumn("95% interval", help="of the score, over the test examples "
                                                                           "and seeds (1,000 seeded bootstrap "
                                                                           "resamples)"),
        "seeds": st.column_config.TextColumn("seeds", help="fine-tuning seeds, and the score's standard deviation "
                                                           "over them"),
        "p50 ms": ui.number_column("latency", "p50 ms", help="latency at batch 1, in the context chosen above"),
        "seq/s": ui.number_column("throughput", "seq/s", help="sequences per second at the context's batch"),
        "noisy": st.column_config.TextColumn("noisy", width="small", help="a noisy speed measurement: why is in "
                                                                            "the speed table below"),
        "tokens/word": ui.number_column("tokens_per_word", "tokens/word",
                                        help="WordPiece pieces per word on the corpus it was measured on"),
    },
)
metric = next((s["metric"] for m in rows if (s := models_data.score_on(m, task_id))), "score")
figure = charts.tradeoff_figure(models_data.tradeoff_rows(rows, task_id, speed, context), metric)
if figure is not None:
    st.plotly_chart(figure, key="models_chart", config={"displaylogo": False})
    st.caption(f"Up and to the left is better. Bubbles grow with the parameters; bars are the 95% interval of the "
               f"score over test examples and seeds; the dotted line joins the models no other model beats on both score and speed. Only "
               f"latencies measured in {context} are drawn; {models_data.NOISY} marks a noisy measurement.")
else:
    st.info("Evaluate models on this task and benchmark them (the tabs below, or an experiment) to see score "
            "against latency here.", icon=":material/scatter_plot:")

if speed:
    st.subheader("Speed", anchor=False)
    st.caption(f"In {context}. " + models_data.how_measured(list(speed.values())))
    st.dataframe(
        models_data.speed_rows(rows, speed), hide_index=True, width="stretch", placeholder="", key="models_speed",
        column_config={
            "model": st.column_config.TextColumn("model", width="large", pinned=True),
            "encoder parameters": ui.number_column(
                "parameters", "encoder parameters", help="of the encoder that is timed (an MLM head is not)"),
            "size": ui.number_column("size", "size", help="the model folder on disk"),
            "threads": st.column_config.NumberColumn("threads", format="%d", width="small"),
            "p50 ms": ui.number_column("latency", "p50 ms", help="median latency at batch 1"),
            "p95 ms": ui.number_column("latency", "p95 ms", help="95th percentile latency at batch 1"),
            "IQR ms": ui.number_column("latency", "IQR ms", help="the spread of the batch-1 latencies: p75 - p25"),
            "seq/s": ui.number_column("throughput", "seq/s", help="sequences per second at the batch"),
            "batch": st.column_config.NumberColumn("batch", format="%d", width="small"),
            "noisy": st.column_config.TextColumn("noisy", width="medium",
                                                 help="p95 over 3x p50, or other work started, stopped or crowded "
                                                      "the cores meanwhile (by the load average)"),
            "benchmark run": st.column_config.NumberColumn("benchmark run", format="%d", width="small"),
        },
    )
    others = [c for c in contexts if c != context]
    if others:
        st.caption("Also measured in " + "; ".join(models_data.context_label(c, measurements) for c in others)
                   + ": choose one above to see those numbers (never mixed with these).")

def onnx_section(spec: str) -> None:
    """Export the model to ONNX for serving (fp32 or int8), checked against PyTorch, and download it."""
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    precision = left.selectbox("ONNX precision", ["fp32", "int8"], key="models_onnx_precision",
                               help="int8: the weights dynamically quantized by ONNX Runtime, about 4x smaller")
    if right.button("Export to ONNX", key="models_onnx_export", icon=":material/output:",
                    help="The encoder (a fine-tuned model with its task head: logits out) as model.onnx with "
                         "dynamic batch and sequence axes and the tokenizer files, checked against PyTorch before it "
                         "is written."):
        with ui.reported(), st.spinner(f"Exporting {spec} to ONNX ({precision}) and checking it against PyTorch…"):
            st.session_state.models_onnx = models_data.onnx_export(sm, spec, precision)
    done = st.session_state.get("models_onnx")
    if done and done["model"] == spec:
        st.caption(f":material/check: {done['precision']} export in `{done['path']}` ({ui.human_bytes(done['bytes'])}"
                   f"): largest difference from PyTorch {done['max_abs_diff']:.2g}, smallest cosine of a sequence "
                   f"{done['min_pooled_cosine']:.4f}" + (f", the same label at {done['same_prediction']:.1%} of the "
                                                          f"probe's positions" if "same_prediction" in done else "")
                   + ". Time it beside the others with Benchmark (name its folder).")
        st.download_button("Download the ONNX export", data=lambda: models_data.folder_zip(done["path"]),
                           file_name=f"{done['path'].rstrip('/').rsplit('/', 1)[-1]}.zip", mime="application/zip",
                           key="models_onnx_download", icon=":material/download:", on_click="ignore")


def trainable(model: dict) -> bool:
    """A model that can be fine-tuned: an encoder, not a fine-tuned model nor an ONNX export."""
    return model["kind"] != FINE_TUNED and not (model["path"] and is_onnx_folder(model["path"]))


specs = list(by_spec)
label = lambda s: by_spec[s]["name"]  # noqa: E731
one_tab, compare_tab, evaluate_tab, bench_tab = st.tabs([":material/info: One model", ":material/compare: Compare two",
                                                         ":material/fact_check: Evaluate", ":material/speed: Benchmark"])

with one_tab:
    if st.session_state.get("models_selected") not in specs:
        st.session_state.models_selected = specs[0]
    spec = st.selectbox("Model", specs, key="models_selected", format_func=label)
    with ui.reported():
        detail = models_data.model_detail(sm, spec)
        st.markdown(" ← ".join(f"**{step['name']}**" + (f" (corpus {step['corpus_id']})" if step.get("corpus_id")
                                                        else "") for step in detail["lineage"]))
        cols = st.columns(4)
        speed = detail["speed"] or {}
        cols[0].metric("Parameters", parameters(detail["parameters"]))
        cols[1].metric("Size on disk", ui.human_bytes(detail["size_bytes"]) if detail["size_bytes"] else "—")
        cols[2].metric("Latency, batch 1", latency_ms(speed.get("latency_ms_p50")))
        cols[3].metric("Throughput", throughput(speed.get("throughput_per_s")))
        if detail["speed"]:
            measured = detail["speed"]
            encoder = (f"; {parameters(measured['params'])} parameters in the encoder that was timed"
                       if measured.get("threads") is not None and measured.get("params") else "")
            st.caption(f"Speed: the latest measurement, in {measured['context']}{encoder}. "
                       + models_data.noisy_note(measured))
        if detail["intrinsic"]:
            i = detail["intrinsic"]
            st.caption(f"On {i['context']}: {tokens_per_word(i['tokens_per_word'])} tokens per word, {i['unknown_rate']:.3%} "
                       f"unknown" + (f", MLM perplexity {i['perplexity']:,.4g} on the held-out blocks"
                                     if i.get("perplexity") else ", no trained MLM head (no perplexity)")
                       + ". Perplexities of models with different vocabularies are not comparable.")
        if detail["evaluations"]:
            st.dataframe([{"run": e["run_id"], "task": e["task"], "status": e["status"], "metric": e["metric"],
                           "mean": e["mean"], "95% interval": score_interval(e["ci95"]),
                           "seeds": seeds_spread(e["seeds"], e["std"]),
                           "converged": {True: "yes", False: "still improving", None: ""}[e["converged"]]}
                          for e in detail["evaluations"]], hide_index=True, width="stretch", placeholder="", key="models_evaluations",
                         column_config={"mean": st.column_config.NumberColumn(format="%.4f")})
            chosen = detail["evaluations"][0]
            curve = charts.dev_curves_figure(models_data.evaluation_history(sm, chosen["run_id"]), chosen["metric"])
            if curve is not None:
                st.caption(f"Dev {chosen['metric']} per epoch of evaluation run {chosen['run_id']} ({chosen['task']}): "
                           f"a seed that still rises at its last epoch had not converged.")
                st.plotly_chart(curve, key="models_dev_curve", config={"displaylogo": False})
        elif kept := detail["fine_tuned"]:
            metric = kept["metric"]
            labels = ", ".join(map(str, kept["labels"][:8])) + (", …" if len(kept["labels"]) > 8 else "")
            st.caption(f"Fine-tuned ({kept['task_type']}, labels {labels}): the seed "
                       f"{kept['seed']} of {count(int(kept.get('seeds') or 1), 'seed')}, kept for its best dev "
                       f"{metric} {kept['dev'].get(metric, 0):.4f}; its test {metric} {kept['test'].get(metric, 0):.4f} "
                       f"(the evaluation's mean over the seeds is on the model it was fine-tuned from). Export it "
                       f"to ONNX below to serve it.")
        else:
            st.caption("Not evaluated yet: use the Evaluate tab.")
        if detail["kind"] not in ("bundled", "folder") and detail["path"]:
            st.download_button("Download as zip", data=lambda: models_data.zip_bytes(sm, spec),
                               file_name=f"{spec.replace(':', '-')}.zip", mime="application/zip",
                               key="models_download", icon=":material/download:", on_click="ignore",
                               help="The model folder with a generated model card (README.md); checkpoints left out.")
            st.caption(f":material/folder: `{detail['path']}`")
        onnx_section(spec)

with compare_tab:
    if len(specs) < 2:
        st.caption("Two models are needed to compare.")
    else:
        first = st.selectbox("First", specs, key="models_first", format_func=label)  # full width: whole names
        second = st.selectbox("Second", specs, index=1, key="models_second", format_func=label)
        if first == second:
            st.caption("Choose two different models.")
        else:
            with ui.reported():
                view = models_data.compare(sm, first, second)
                only_diff = st.checkbox("Only the settings that differ", value=True, key="models_only_diff")
                settings_rows = [r for r in view["settings"] if r["differs"] or not only_diff]
                st.dataframe([{"setting": r["setting"], label(first): r[first], label(second): r[second]}
                              for r in settings_rows], hide_index=True, width="stretch", placeholder="", key="models_diff")
                score_rows = models_data.score_pairs(view["scores"], first, second)
                if score_rows:
                    st.dataframe([{"task": r["task"], "metric": r["metric"], label(first): r[first],
                                   label(second): r[second]} for r in score_rows], hide_index=True, width="stretch", placeholder="",
                                 key="models_compare_scores",
                                 column_config={label(first): st.column_config.NumberColumn(format="%.4f"),
                                                label(second): st.column_config.NumberColumn(format="%.4f")})
                overlay = charts.overlay_figure({label(s): h for s, h in view["histories"].items()})
                if overlay is not None:
                    st.plotly_chart(overlay, key="models_overlay", config={"displaylogo": False})

with evaluate_tab:
    if not tasks:
        st.info("No labelled task yet: add one on the Tasks page.", icon=":material/label:")
        st.page_link("views/tasks.py", label="Go to Tasks", icon=":material/label:")
    else:
        encoders = [s for s in specs if trainable(by_spec[s])]  # not a task head again, nor an ONNX export
        target = st.selectbox("Model", encoders, key="models_eval_model", format_func=label)
        cols = st.columns([4, 1, 1])
        eval_task = cols[0].selectbox("Task", list(task_names), key="models_eval_task", format_func=task_names.get)
        seeds = cols[1].number_input("Seeds", 1, 20, 3, key="models_eval_seeds")
        epochs = cols[2].number_input("Most epochs", 1, 100, 10, key="models_eval_epochs",
                                      help="Early stopping on dev usually ends a seed sooner.")
        keep = st.checkbox("Keep the fine-tuned model", key="models_eval_keep",
                           help="The best seed's fine-tuned model (by dev score), its task head included, becomes a "
                                "model of its own: export it to ONNX and serve it.")
        if st.button("Evaluate", key="models_eval_launch", type="primary", icon=":material/play_arrow:"):
            with ui.reported():
                run_id = models_data.start_evaluation(sm, connections.redis(), target, eval_task,
                                                      {"seeds": int(seeds), "epochs": int(epochs), "keep": keep})
                ui.flash(FLASH, "success", f"Evaluation queued as run {run_id}: fine-tuning {label(target)} on task "
                                           f"{eval_task} with {count(int(seeds), 'seed')}.")
                st.rerun()

with bench_tab:
    chosen_specs = st.multiselect("Models (the first is the reference)", specs, key="models_bench_models",
                                  format_func=label)
    corpora = {c["id"]: c["name"] for c in corpora_data.list_corpora(sm)}
    corpus_column, threads_column = st.columns([3, 1])
    corpus = corpus_column.selectbox("Also measure on corpus", [None, *corpora], key="models_bench_corpus",
                                     format_func=lambda c: "no corpus" if c is None else f"{c} · {corpora[c]}",
                                     help="Tokens per word, unknown rate and MLM perplexity on the corpus.")
    threads = threads_column.number_input("Threads", 1, 256, 1, key="models_bench_threads",
                                          help="torch threads pinned for the whole measurement; 1 is batch-1 "
                                               "latency as one serving worker sees it. Another number is "
                                               "another context, compared apart.")
    if st.button("Benchmark", key="models_bench_launch", icon=":material/speed:", disabled=not chosen_specs):
        with ui.reported():
            run_id = models_data.start_benchmark(sm, connections.redis(), chosen_specs, corpus, int(threads))
            ui.flash(FLASH, "success", f"Benchmark queued as run {run_id}: "
                                       f"{count(len(chosen_specs), 'model')} side by side.")
            st.rerun()
