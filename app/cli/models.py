"""`models list | show | export | card`: the catalogue of models with their scores and speed."""

from __future__ import annotations

from app.cli.common import command, mean_std, megabytes, open_sessions, print_result
from core.formatting import latency_ms, parameters, tokens_per_word


def _model_line(m: dict) -> str:
    best = max((s for s in m["scores"] if s["mean"] is not None), key=lambda s: s["mean"], default=None)
    score = f"  {best['metric']} {best['mean']:.4f} on {best['task']}" if best else ""
    speed = f"  {latency_ms(m['speed']['latency_ms_p50'])} ({m['speed']['context']}" \
        + (", noisy)" if m["speed"].get("noisy") else ")") if m["speed"] else ""
    return f"{m['model_id']:>4} {m['spec'][:28]:<28} {parameters(m['parameters']):>8} " \
           f"{megabytes(m['size_bytes']):>10}  {m['name'][:50]}{score}{speed}"


def cmd_models_list(args) -> None:
    from worker.evaluation import models_table

    from worker.catalogue import models_to_come

    sessions = open_sessions()
    rows = models_table(sessions)
    with sessions.begin() as session:
        to_come = models_to_come(session)
    header = f"{'id':>4} {'model':<28} {'params':>8} {'size':>10}  name, best score, p50 latency"
    lines = [header] + [_model_line(m) for m in rows]
    if to_come:
        lines.append("to come: " + ", ".join(f"run:{r['run_id']} ({r['kind']}, {r['status']})" for r in to_come))
    print_result(args, {"models": rows, "to_come": to_come}, "\n".join(lines))


def cmd_models_show(args) -> None:
    from worker.catalogue import check_made, ensure_model, lineage, model_summary

    with open_sessions().begin() as session:
        record = ensure_model(session, args.model)
        check_made(record)
        data = {**model_summary(session, record), "lineage": lineage(session, record)}
    lines = [_model_line(data), "lineage: " + " <- ".join(
        f"{step['name']}" + (f" (corpus {step['corpus_id']})" if step.get("corpus_id") else "")
        for step in data["lineage"])]
    lines += [f"  {s['task']}: {s['metric']} {mean_std(s['mean'], s['std'])} ({s['seeds']} seeds, run "
              f"{s['evaluation_run']})" for s in data["scores"]]
    if data["speed"]:
        lines.append(f"  speed ({data['speed']['context']}): p50 {latency_ms(data['speed']['latency_ms_p50'])}, "
                     f"{data['speed']['throughput_per_s']:.1f} sequences/s"
                     + (f"  NOISY: {data['speed']['noisy_reason']}" if data["speed"].get("noisy") else ""))
    if data["intrinsic"]:
        i = data["intrinsic"]
        lines.append(f"  on {i['context']}: {tokens_per_word(i['tokens_per_word'])} tokens/word, {i['unknown_rate']:.3%} unknown"
                     + (f", perplexity {i['perplexity']:.4g}" if i.get("perplexity") else ""))
    print_result(args, data, "\n".join(lines))


def cmd_models_export(args) -> None:
    from worker.catalogue import export_zip

    path = export_zip(open_sessions(), args.model, args.out)
    print_result(args, {"model": args.model, "zip": str(path), "bytes": path.stat().st_size},
                 f"wrote {path} ({megabytes(path.stat().st_size)})")


def cmd_models_export_onnx(args) -> None:
    from worker.exports import export_onnx_model

    info = export_onnx_model(open_sessions(), args.model, args.out, args.quantize or "fp32")
    print_result(args, info, f"wrote {info['path']} ({info['precision']}, {megabytes(info['bytes'])}): largest "
                             f"difference from PyTorch {info['max_abs_diff']:.2g}, smallest cosine of a token "
                             f"{info['min_cosine']:.4f} and of a sequence {info['min_pooled_cosine']:.4f} on the "
                             f"probe batches")


def cmd_models_card(args) -> None:
    from worker.catalogue import write_card

    path = write_card(open_sessions(), args.model)
    print_result(args, {"model": args.model, "card": str(path)}, f"wrote {path}")


def add_commands(sub) -> None:
    """models list, show, export, export-onnx and card."""
    models = sub.add_parser("models", help="list, show and export models").add_subparsers(dest="action", required=True)
    command(models, "list", cmd_models_list, "every model with its size, best score and speed")
    p = command(models, "show", cmd_models_show, "a model's lineage, scores, speed and measures")
    p.add_argument("model", help="a model id, bundled, run:ID or a folder")
    p = command(models, "export", cmd_models_export, "write a model as a zip with its model card")
    p.add_argument("model", help="a model id, run:ID or a folder")
    p.add_argument("--out", help="a .zip file, or a folder (an existing one, or a path ending in /) for "
                                 "<model>.zip (default: ADAPT_DISTILL_HOME/exports/)")
    p = command(models, "export-onnx", cmd_models_export_onnx, "write a model's encoder as ONNX for serving, checked "
                                                               "against PyTorch (needs the onnx extra)")
    p.add_argument("model", help="a model id, bundled, run:ID or a folder")
    p.add_argument("--quantize", choices=["int8"], help="dynamically quantize the weights to int8 (ONNX Runtime)")
    p.add_argument("--out", help="the new folder, or a folder (an existing one, or a path ending in /) for "
                                 "<model>-onnx-<precision>/ (default: ADAPT_DISTILL_HOME/exports/)")
    p = command(models, "card", cmd_models_card, "(re)write the model card README.md in a model's folder")
    p.add_argument("model", help="a model id or run:ID")
