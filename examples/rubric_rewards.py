"""A rubric reward for the built-in reversal task (`rev:word=`), for HeRL's hindsight
(`--rollout.refine-method herl --rollout.critique rubric`): each dict key is one rubric item, met at 1.

The scalar reward is the sum of the items (0 to 5); `correct` decides held-out accuracy, and a group
none of whose answers meets every item gets hindsight: its best answers are shown, by name, the items
they met and those they missed.
"""


def reversal_rubric(prompt: str, completion: str, answer: str, **_) -> dict[str, float]:
    """Five checks of a reversal: exact, length, first and last letter, and the same letters."""
    got = completion.strip()
    return {"correct": float(got == answer),
            "right_length": float(len(got) == len(answer)),
            "first_letter": float(got[:1] == answer[:1]),
            "last_letter": float(got[-1:] == answer[-1:]),
            "same_letters": float(sorted(got) == sorted(answer))}
