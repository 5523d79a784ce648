"""One of the data-parallel processes of a training run: `torchrun --nproc-per-node N -m worker.ddp
RUN_ID`, started by the run's job (worker.training.train_in_processes). Each process joins the
group (NCCL on GPUs, gloo on the CPU) and trains its share of every batch; the first reports to the
store, writes the checkpoints and the model, and hands the result (or the error) back in a JSON
file in the run's folder."""

from __future__ import annotations

import json
import signal
import sys
from db.models import Run


def main(argv: list[str] | None = None) -> int:
    import torch

    from core.devices import resolve_device
    from core.errors import Cancelled, user_error
    from core.train import distributed
    from db import store
    from db.session import get_sessionmaker
    from worker import lifecycle, run_state, training
    from worker.queueing.embedded import die_with_parent

    die_with_parent()  # a launcher killed outright (SIGKILL) leaves no trainer behind
    run_id = int((argv if argv is not None else sys.argv[1:])[0])
    signal.signal(signal.SIGTERM, lambda signum, frame: lifecycle.STOPPING.set())  # torchrun passes a stop on
    sessions = get_sessionmaker()
    with sessions.begin() as session:
        device = store.get(session, Run, run_id).params.get("device") or "auto"
    shard = distributed.init_from_env(resolve_device(device).type)
    outcome = run_state.run_dir(run_id) / training.PROCESSES_RESULT

    def hand_back(data: dict) -> None:
        if shard.main:
            outcome.write_text(json.dumps(data, default=str), encoding="utf-8")

    code = 0
    try:
        report = lifecycle.reporter_for(sessions, run_id) if shard.main else None
        hand_back({"result": training.train(sessions, run_id, report, check=False).to_dict()})
    except Cancelled as exc:
        hand_back({"cancelled": str(exc)})
    except Exception as exc:
        known = user_error(exc)
        hand_back({"error": str(known) if known else f"{type(exc).__name__}: {exc}", "known": known is not None})
        code = 1
        if known is None:
            raise
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
