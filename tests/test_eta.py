"""The ETA of a training loop counts the evaluations and checkpoints still due, at the cost measured."""

import pytest

from core.train.eta import CHECKPOINTING, EVALUATING, SETTLING_STEPS, TRAINING, Clock


def drive(clock: Clock, steps: int, step_s: float, eval_s: float, checkpoint_s: float, now: float = 0.0) -> float:
    """Replay a loop as core.train.loop.run_loop reports it: an evaluation before the first step,
    then each step, an evaluation every eval_every and at the last, a checkpoint every
    checkpoint_every before the last."""
    clock.observe(EVALUATING, 0, now)
    now += eval_s
    clock.observe(TRAINING, 0, now)
    for done in range(1, steps + 1):
        now += step_s
        if done % clock.eval_every == 0 or done == clock.total:
            clock.observe(EVALUATING, done, now)
            now += eval_s
        if done % clock.checkpoint_every == 0 and done < clock.total:
            clock.observe(CHECKPOINTING, done, now)
            now += checkpoint_s
        clock.observe(TRAINING, done, now)
    return now


def test_the_time_left_includes_the_evaluations_and_checkpoints_still_due():
    clock = Clock(total=100, eval_every=20, checkpoint_every=30)
    drive(clock, 40, step_s=1.0, eval_s=5.0, checkpoint_s=3.0)
    # left after step 40: 60 steps, evaluations at 60, 80, 100, checkpoints at 60 and 90
    assert clock.due(40) == (3, 2)
    seconds, guess = clock.remaining(40)
    assert seconds == pytest.approx(60 * 1.0 + 3 * 5.0 + 2 * 3.0)
    assert not guess
    # and it is what the rest of the loop then takes
    end = drive(clock := Clock(total=100, eval_every=20, checkpoint_every=30), 100, 1.0, 5.0, 3.0)
    assert end - drive(Clock(total=100, eval_every=20, checkpoint_every=30), 40, 1.0, 5.0, 3.0) == \
        pytest.approx(seconds)


def test_a_first_guess_until_steps_evaluations_and_checkpoints_were_timed():
    clock = Clock(total=50, eval_every=10, checkpoint_every=25)
    assert clock.remaining(0) == (None, True)
    drive(clock, SETTLING_STEPS - 1, 1.0, 5.0, 3.0)
    assert clock.remaining(SETTLING_STEPS - 1)[1]  # too few steps
    drive(clock := Clock(total=50, eval_every=10, checkpoint_every=25), 12, 1.0, 5.0, 3.0)
    seconds, guess = clock.remaining(12)
    assert guess  # the checkpoint at 25 has not been timed: a step's time stands in for it
    assert seconds == pytest.approx(38 * 1.0 + 4 * 5.0 + 1 * 1.0)
    drive(clock := Clock(total=50, eval_every=10, checkpoint_every=25), 30, 1.0, 5.0, 3.0)
    assert clock.remaining(30) == (pytest.approx(20 * 1.0 + 2 * 5.0), False)  # nothing untimed is due


def test_setup_stages_count_for_nothing_and_uneven_intervals_are_counted_right():
    clock = Clock(total=7, eval_every=3, checkpoint_every=2)
    assert clock.due(0) == (3, 3)  # evaluations at 3, 6, 7; checkpoints at 2, 4, 6
    assert clock.due(6) == (1, 0) and clock.due(7) == (0, 0)
    clock.observe("tokenizing", 0, 0.0)
    clock.observe(TRAINING, 0, 100.0)  # a long setup is no step
    clock.observe(TRAINING, 2, 102.0)
    assert clock.mean(TRAINING) == pytest.approx(1.0)
    assert Clock(total=10, eval_every=None, checkpoint_every=10**12).due(3) == (0, 0)
