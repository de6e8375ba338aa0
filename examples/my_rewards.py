"""An example user reward: called as fn(prompt, completion, **extra_columns) -> float."""


def exact(prompt: str, completion: str, target: str, **_) -> float:
    """1.0 when the completion is exactly the row's `target` column."""
    return float(completion.strip() == target)
