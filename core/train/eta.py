"""The time left of a training loop, from what it has measured: seconds per optimizer step (the
steps alone), per held-out evaluation and per checkpoint, times the evaluations and checkpoints
still due. The loop reports the phase it enters (`TRAINING`, `EVALUATING`, `CHECKPOINTING`) with
the step it is at; anything else is setup and counts for nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

TRAINING, EVALUATING, CHECKPOINTING = "training", "evaluating", "writing a checkpoint"
PHASES = (TRAINING, EVALUATING, CHECKPOINTING)
SETTLING_STEPS = 3  # fewer measured steps than this: the first steps are slower, the rate a guess


@dataclass
class Clock:
    total: int
    eval_every: int | None  # None: the loop does not evaluate
    checkpoint_every: int
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    phase: str | None = None
    since: float = 0.0
    at_step: int = 0

    def observe(self, phase: str, step: int, now: float) -> None:
        """The loop is in `phase` at `step` (steps done) at time `now`: the time since the last
        call goes to the phase it was in, and a step, an evaluation or a checkpoint is counted when
        it ends."""
        if self.phase in PHASES:
            self.seconds[self.phase] += now - self.since
            if self.phase == TRAINING:
                self.counts[TRAINING] += max(0, step - self.at_step)
            elif phase != self.phase:
                self.counts[self.phase] += 1
        self.phase, self.since, self.at_step = phase, now, step

    def due(self, step: int) -> tuple[int, int]:
        """(evaluations, checkpoints) still to come after `step`: an evaluation every eval_every
        steps and at the last; a checkpoint every checkpoint_every steps before the last."""
        evaluations = 0
        if self.eval_every:
            evaluations = self.total // self.eval_every - step // self.eval_every
            evaluations += 1 if self.total % self.eval_every and step < self.total else 0
        checkpoints = (self.total - 1) // self.checkpoint_every - step // self.checkpoint_every
        return max(0, evaluations), max(0, checkpoints)

    def mean(self, phase: str) -> float | None:
        return self.seconds[phase] / self.counts[phase] if self.counts[phase] else None

    def remaining(self, step: int) -> tuple[float | None, bool]:
        """(seconds left, first guess) at `step`; (None, True) before a step was measured. A guess
        while the step rate rests on fewer than SETTLING_STEPS steps or an evaluation or checkpoint
        still due has never been timed (a step's time stands in for it)."""
        per_step = self.mean(TRAINING)
        if per_step is None:
            return None, True
        evaluations, checkpoints = self.due(step)
        per_eval, per_checkpoint = self.mean(EVALUATING), self.mean(CHECKPOINTING)
        guess = (self.counts[TRAINING] < SETTLING_STEPS or (evaluations > 0 and per_eval is None)
                 or (checkpoints > 0 and per_checkpoint is None))
        seconds = ((self.total - step) * per_step + evaluations * (per_eval or per_step)
                   + checkpoints * (per_checkpoint or per_step))
        return seconds, guess

    def timing(self) -> dict[str, float | int | None]:
        """What this attempt measured: mean seconds per step, evaluation and checkpoint, and counts."""
        return {"step_s": self.mean(TRAINING), "evaluation_s": self.mean(EVALUATING),
                "checkpoint_s": self.mean(CHECKPOINTING), "steps": self.counts[TRAINING],
                "evaluations": self.counts[EVALUATING], "checkpoints": self.counts[CHECKPOINTING]}
