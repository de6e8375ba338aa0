"""Example user rewards: called as fn(prompt, completion, **extra_columns) -> float or {name: float}."""


def exact(prompt: str, completion: str, target: str, **_) -> float:
    """1.0 when the completion is exactly the row's `target` column."""
    return float(completion.strip() == target)


def exact_and_length(prompt: str, completion: str, target: str, **_) -> dict[str, float]:
    """Two reward components: exactness and the right length.

    The scalar reward is their sum; `--algo.advantage gdpo` normalises each one
    within its group before adding them.
    """
    answer = completion.strip()
    return {"correct": float(answer == target), "length": float(len(answer) == len(target))}


def correct(prompt: str, completion: str, target: str, **_) -> float:
    """1.0 for the right answer: with several functions (`--data.reward "...:correct, ...:brief"`), the one
    named `correct` decides held-out accuracy."""
    return float(completion.strip() == target)


def brief(prompt: str, completion: str, target: str, **_) -> float:
    """1.0 when the answer is no longer than the target: a second reward to weigh against `correct`."""
    return float(len(completion.strip()) <= len(target))
