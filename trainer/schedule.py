"""The learning-rate schedule: constant (the seed's), after an optional linear warm-up, and optionally ending
in a linear warm-down to 0 at the run's end, which under --time-limit is planned from the measured speed."""


def warmup_factor(step: int, warmup_steps: int) -> float:
    """A linear rise over the first `warmup_steps` steps: (step + 1) / warmup_steps, then 1."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def lr_at(step: int, end: int, lr: float, warmdown_steps: int) -> float:
    """Constant, then a linear fall to 0 over the last `warmdown_steps` steps before `end`."""
    if warmdown_steps <= 0:
        return lr
    return lr * min(1.0, max(end - step, 0) / warmdown_steps)


def planned_warmdown(warmdown_steps: int, end: int, plan_start: int | None) -> int:
    """A warm-down longer than a time plan leaves falls from where the plan starts, not in a cliff there."""
    return warmdown_steps if plan_start is None else min(warmdown_steps, max(end - plan_start, 1))


class EndPlanner:
    """The step a time-limited run will end at: its last step, or earlier where the time limit comes
    first at the speed measured so far, so that a warm-down ends with the run whichever comes first.

    The speed is measured from a tenth of the way in: the first steps (CUDA start-up, cuDNN's search,
    other runs starting beside this one) are slow, and an end planned from them once started a
    warm-down at the second step and held the LR at a tenth of its value for a whole GPU run.
    """

    def __init__(self, started: float, deadline: float):
        self.started, self.deadline = started, deadline
        self.since: tuple[int, float] | None = None  # (step, time) the speed is measured from

    def end(self, last_step: int, step: int, now: float) -> int:
        if self.since is None:
            if now - self.started < 0.1 * (self.deadline - self.started):
                return last_step
            self.since = step, now
        step0, t0 = self.since
        if step <= step0 or now <= t0:
            return last_step
        per_second = (step - step0) / (now - t0)
        return min(last_step, step + int(per_second * max(self.deadline - now, 0.0)))
