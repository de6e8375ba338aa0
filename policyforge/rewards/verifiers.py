"""Ready-made verifiable rewards for your data: `--data.reward policyforge.rewards.verifiers:NAME`.

Each is a reward function as rewards.score describes, `fn(prompt, completion, **columns)`,
reading the reference answer from the row's `answer` column, else `solution`, else `target`
(the first one present), and returning 1.0 (solved) or 0.0:

- `exact`: the completion, stripped, equals the answer, stripped.
- `math_answer`: the completion's final answer equals the reference as a number (1,000 =
  1000 = 1000.0; 1/2 = \\frac{1}{2} = 0.5; 50% = 50) or, when either is not a number, as
  text with spaces, `$` and LaTeX sizing removed. The final answer is the last \\boxed{...},
  else what follows the last "####" (GSM8K's mark), else what follows the last "answer is"
  / "answer:" (the number it starts with, else its line), else the last number in the text.
  A reference marked the same way (a GSM8K solution column, "... #### 72") is read the same
  way; an unmarked one is the answer as it is. Numbers compare exactly (as fractions); a
  comma counts only in thousands groups ("1,2" is a pair); scientific notation and symbolic
  equality (x+1 = 1+x) are not recognised: for those, call the math-verify package from
  your own reward function.
- `think_answer_format`: the completion is `<think>...</think>` then `<answer>...</answer>`
  and nothing else (the format DeepSeek-R1-style prompts ask for); a format reward to add to
  a correctness reward (return both from your own function as a dict, or see README).
"""

from __future__ import annotations

import re
from fractions import Fraction

from policyforge.rewards.score import RewardError

ANSWER_COLUMNS = ("answer", "solution", "target")


def reference(columns: dict) -> str:
    """The row's reference answer: its first column among ANSWER_COLUMNS, as text."""
    for name in ANSWER_COLUMNS:
        if columns.get(name) is not None:
            return str(columns[name])
    raise RewardError(f"this verifier compares with the row's reference answer, but the row has none of the columns "
                      f"{', '.join(ANSWER_COLUMNS)} (it has: {', '.join(sorted(columns)) or 'no other columns'})")


def exact(prompt: str, completion: str, **columns) -> float:
    """1.0 when the stripped completion equals the stripped reference answer."""
    return float(completion.strip() == reference(columns).strip())


def _boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}), braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1] if depth == 0 else None


# a number as written in an answer: thousands groups (1,000), decimals, a fraction a/b; not after a letter
# or digit run with a hyphen ("step-2" is not -2)
NUMBER = re.compile(r"(?<![\w-])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w-])-?\.\d+|(?<=\w-)\d+(?:\.\d+)?")
SAID = re.compile(r"\banswer\s*(?:is\b\s*:?|:)", re.IGNORECASE)  # "answer is", "answer:", "answer is:"; not "isn't"


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


def final_answer(text: str) -> str:
    """The text's final answer (see the module docstring for the order of the rules); "" when none is found."""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return _first_line(text.rsplit("####", 1)[1])
    said = SAID.split(text)
    if len(said) > 1:  # "The answer is 42 because ...": the number it starts with, else the line
        rest = _first_line(said[-1]).strip("*_ ")  # markdown emphasis: "**42**"
        lead = re.match(r"(?:\$|\\\(|\*)*\s*(" + NUMBER.pattern + ")", rest)
        return lead.group(1) if lead else rest.rstrip(".").strip()
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else ""


def reference_answer(text: str) -> str:
    """A reference's answer: marked like a completion's (\\boxed, ####) when it is, else the whole text."""
    return final_answer(text) if ("####" in text or _boxed(text) is not None) else text.strip()


def _unlatex(s: str) -> str:
    """Text of an answer without what does not change its value: $, spaces, LaTeX sizing and text wrappers."""
    s = re.sub(r"\\(left|right|!|,|;|:|displaystyle)", "", s)
    s = re.sub(r"\\(text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\2", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\%", "%").replace("\\$", "$")
    return s.replace("$", "").replace(" ", "").rstrip(".")


def as_number(s: str) -> Fraction | None:
    """The exact value of an answer that is a number (thousands commas, a %, a fraction a/b or \\frac{a}{b},
    decimals); else None. A comma anywhere else makes it text: "1,2" is a pair, not twelve."""
    s = _unlatex(s).rstrip("%")
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s) or re.fullmatch(r"(-?)\\frac(\d)(\d)", s)
    if frac:
        sign, a, b = frac.groups()
        return None if int(b) == 0 else (-1 if sign else 1) * Fraction(int(a), int(b))
    if re.fullmatch(r"-?\d+/\d+", s):
        a, b = s.split("/")
        return None if int(b) == 0 else Fraction(int(a), int(b))
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return Fraction(s) if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s) else None


def same_answer(a: str, b: str) -> bool:
    """Whether two final answers agree: as exact numbers when both are (0.5 = 1/2; no float rounding, so
    123456789013 is not 123456789012 and a 320-digit answer is just wrong), else as text (see _unlatex)."""
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return x == y
    return bool(_unlatex(a)) and _unlatex(a) == _unlatex(b)


def math_answer(prompt: str, completion: str, **columns) -> float:
    """1.0 when the completion's final answer equals the reference's (both extracted by final_answer)."""
    return float(same_answer(final_answer(completion), reference_answer(reference(columns))))


_BODY = r"(?:(?!</?think>|</?answer>).)*"  # text holding no tag: each tag appears exactly once
FORMAT = re.compile(rf"\s*<think>{_BODY}</think>\s*<answer>{_BODY}</answer>\s*", re.DOTALL)


def think_answer_format(prompt: str, completion: str, **columns) -> float:
    """1.0 when the completion is <think>...</think> followed by <answer>...</answer>, and nothing else."""
    return float(FORMAT.fullmatch(completion) is not None)
