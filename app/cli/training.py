"""`adapt`, `distill` and `pipeline`: training runs, inline or on a worker."""

from __future__ import annotations

from app.cli.common import add_queue_options, command, open_sessions, short_float, train_runs
from core.checks import DEVICE_HELP, PRECISIONS
from core.configs import ADAPT_LR, DISTILL_LR, SCHEDULES, STRATEGIES, AdaptConfig, DistillConfig, TrainConfig
from core.errors import ConfigError
from core.model_io import BUNDLED

TRAIN, ADAPT, DISTILL = TrainConfig(), AdaptConfig(), DistillConfig()  # the defaults the help shows

TRAIN_ARGS = ("steps", "epochs", "batch_size", "grad_accum", "lr", "weight_decay", "warmup", "schedule", "seed", "eval_every",
              "checkpoint_every", "log_every", "device", "precision", "seq_len", "heldout_fraction", "processes")
ADAPT_ARGS = ("mask_probability", "whole_word", "head_warmup", "head_lr")
DISTILL_ARGS = ("student", "layers", "hidden", "heads", "intermediate", "init", "version", "teacher_layer",
                "relation_heads", "mlm_weight", "allow_larger_student")


def _params(args, names, **renamed) -> dict:
    params = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    params.update({k: getattr(args, v) for k, v in renamed.items() if getattr(args, v, None) is not None})
    return params


def _check_device(args) -> None:
    """Refuse now, before anything is recorded, a --device the run could not get: on this machine
    (inline), or on any worker serving the gpu queue (--queue)."""
    device = getattr(args, "device", None) or "auto"
    if args.queue:
        from worker.kinds import GPU
        from worker.queueing.queues import connect
        from worker.queueing.serve import check_device_served

        check_device_served(connect(), GPU, device, getattr(args, "processes", None) or 1)
    elif device not in ("auto", "cpu"):
        from core.devices import resolve_device

        resolve_device(device)
        processes = getattr(args, "processes", None) or 1
        if device.startswith("cuda") and processes > 1:
            import torch

            if torch.cuda.device_count() < processes:
                raise ConfigError(f"--gpus {processes} asked for, but this machine has {torch.cuda.device_count()} "
                                  f"GPU(s): use --gpus {max(torch.cuda.device_count(), 1)}, or --queue for a worker")


def cmd_adapt(args) -> None:
    from worker import training

    _check_device(args)
    run = training.create_adaptation(open_sessions(), args.corpus, args.teacher,
                                     _params(args, TRAIN_ARGS + ADAPT_ARGS))
    train_runs(args, [run])


def cmd_distill(args) -> None:
    from worker import training

    _check_device(args)
    run = training.create_distillation(open_sessions(), args.corpus, args.teacher,
                                       _params(args, TRAIN_ARGS + DISTILL_ARGS))
    train_runs(args, [run])


def cmd_pipeline(args) -> None:
    from worker import training

    _check_device(args)
    common = _params(args, TRAIN_ARGS)
    common.pop("steps", None)
    adapt = {**common, **_params(args, ADAPT_ARGS, steps="adapt_steps", lr="adapt_lr")}
    distill = {**common, **_params(args, DISTILL_ARGS, steps="distill_steps", lr="distill_lr")}
    runs = training.create_pipeline(open_sessions(), args.strategy, args.corpus, args.teacher, adapt, distill,
                                    args.student_init)
    train_runs(args, runs)


def _training_options(p, steps: bool = True) -> None:
    if steps:
        p.add_argument("--steps", type=int, help=f"optimizer steps (default {TRAIN.steps})")
        p.add_argument("--epochs", type=float, help="passes over the corpus; sets the number of steps")
    p.add_argument("--corpus", type=int, required=True, help="corpus id (adapt-distill corpus list)")
    p.add_argument("--teacher", "--model", dest="teacher", default=BUNDLED,
                   help="a folder, a hub id, 'bundled', or run:ID (the model a finished run made, e.g. an expansion)")
    p.add_argument("--batch-size", type=int, help=f"blocks per micro-batch (default {TRAIN.batch_size})")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float,
                   help=f"peak learning rate (default {ADAPT_LR:g} adapting, {DISTILL_LR:g} distilling)")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {TRAIN.weight_decay:g})")
    p.add_argument("--warmup", type=float, help="a fraction of the steps (< 1) or a number of steps")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate decay after the warmup (default {TRAIN.schedule})")
    p.add_argument("--seq-len", type=int, help=f"tokens per packed block (default {ADAPT.seq_len})")
    p.add_argument("--heldout-fraction", type=float, help="share of the blocks held out for evaluation, in (0, 0.5] "
                                                          f"(default {ADAPT.heldout_fraction:g})")
    p.add_argument("--eval-every", type=int, help=f"steps between held-out losses (default {TRAIN.eval_every})")
    p.add_argument("--checkpoint-every", type=int,
                   help=f"steps between checkpoints (default {TRAIN.checkpoint_every})")
    p.add_argument("--log-every", type=int, help=f"steps between logged training losses (default {TRAIN.log_every})")
    p.add_argument("--seed", type=int,
                   help=f"seed of the data order, masking and initialisation (default {TRAIN.seed})")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"auto: bf16 on a GPU that has it, else fp32 (default {TRAIN.precision})")
    p.add_argument("--gpus", dest="processes", type=int,
                   help="data-parallel processes, one per GPU, under torchrun (with --device cpu: CPU processes); "
                        f"the global batch stays --batch-size x --grad-accum (default {TRAIN.processes})")
    add_queue_options(p, queue_help="run on a worker (gpu queue) instead of inline")


def _adapt_options(p) -> None:
    p.add_argument("--mask-probability", type=float,
                   help=f"share of the tokens masked (default {ADAPT.mask_probability:g})")
    p.add_argument("--whole-word", action="store_true", default=None, help="whole-word masking")
    p.add_argument("--head-warmup", type=float,
                   help="a model without a trained MLM head first trains the head alone (encoder frozen) for this "
                        f"fraction of the steps (< 1) or number of steps; 0 skips it (default {ADAPT.head_warmup:g})")
    p.add_argument("--head-lr", type=float,
                   help=f"peak learning rate of the head's warm-up (default {short_float(ADAPT.head_lr)})")


def _distill_options(p) -> None:
    p.add_argument("--student", help="preset: L6-H384, L4-H312, L3-H256 or L2-H128 (default: derived from the "
                                     "teacher, half its layers and width: L3-H192 for the bundled 6L-384H model)")
    p.add_argument("--layers", type=int, help="student layers (overrides the preset or the derived shape)")
    p.add_argument("--hidden", type=int, help="student hidden size")
    p.add_argument("--heads", type=int, help="student attention heads")
    p.add_argument("--intermediate", type=int, help="student feed-forward size")
    p.add_argument("--allow-larger-student", action="store_true", default=None,
                   help="distil into a student that is not smaller than the teacher (refused by default)")
    p.add_argument("--init", help="random, teacher (every k-th teacher layer) or a model (folder, bundled, run:ID)")
    p.add_argument("--version", choices=["v1", "v2"], help="MiniLM v2 relations (default) or v1")
    p.add_argument("--teacher-layer", type=int,
                   help=f"teacher layer to distil from (default {DISTILL.teacher_layer}, the last)")
    p.add_argument("--relation-heads", type=int,
                   help="MiniLMv2 relation heads; must divide both hidden sizes (default: the teacher's heads)")
    p.add_argument("--mlm-weight", type=float,
                   help=f"weight of an extra student MLM loss (default {DISTILL.mlm_weight:g})")


def add_commands(sub) -> None:
    """adapt, distill and pipeline."""
    p = command(sub, "adapt", cmd_adapt, "continue masked-LM pretraining of a teacher on a corpus")
    _training_options(p)
    _adapt_options(p)
    p = command(sub, "distill", cmd_distill, "distil a teacher into a small student (MiniLM)")
    _training_options(p)
    _distill_options(p)
    p = command(sub, "pipeline", cmd_pipeline, "adapt and distil in one of the paper's three orders")
    _training_options(p, steps=False)
    _adapt_options(p)
    _distill_options(p)
    p.add_argument("--strategy", required=True, help="the paper's order of the two stages", choices=STRATEGIES)
    p.add_argument("--adapt-steps", type=int, help=f"steps of each adaptation (default {TRAIN.steps})")
    p.add_argument("--distill-steps", type=int, help=f"steps of the distillation (default {TRAIN.steps})")
    p.add_argument("--adapt-lr", type=float, help=f"peak learning rate of adaptation (default {ADAPT_LR:g})")
    p.add_argument("--distill-lr", type=float,
                   help=f"peak learning rate of distillation (default {DISTILL_LR:g})")
    p.add_argument("--student-init", help="adapt-and-distill: the small pretrained student to adapt")
