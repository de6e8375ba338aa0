"""TRL's soft overlong punishment bound at module level, as a user's reward module would hold it (needs trl)."""

from trl.rewards import get_soft_overlong_punishment

overlong_32 = get_soft_overlong_punishment(32, 8)  # sized for another budget than the test runs' 4 tokens
overlong_4 = get_soft_overlong_punishment(4, 2)


def correct(prompt, completion, answer, **_):
    return float(completion.strip() == answer)
