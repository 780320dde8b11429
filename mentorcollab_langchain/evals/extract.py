"""Answer extraction and scoring: the final number (GSM8K), ``\\boxed{}`` with mathematical
equivalence (MATH), the option letter (multiple choice).

Every extractor returns ``None`` when it finds no answer; the runner counts such answers as wrong and
counts them separately, so a format problem is never mistaken for a reasoning problem.
"""

from __future__ import annotations

import re
from fractions import Fraction

# -- numbers (GSM8K) ---------------------------------------------------------------------------

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_FINAL_PATTERNS = (
    re.compile(r"answer is[:\s]*\**\s*(" + _NUMBER + ")", re.IGNORECASE),
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"final answer[^\d\-$]{0,20}(" + _NUMBER + ")", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
)


def _clean_number(text: str) -> str | None:
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return str(float(value))


def extract_number(text: str) -> str | None:
    """The final number of a GSM8K answer: after "The answer is", "####", "final answer" or in
    ``\\boxed{}`` (the first such marker), else the last number in the text."""
    for pattern in _FINAL_PATTERNS:
        match = pattern.search(text)
        if match:
            return _clean_number(match.group(1))
    numbers = re.findall(_NUMBER, text)
    return _clean_number(numbers[-1]) if numbers else None


def numbers_equal(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    expected, predicted = _clean_number(gold), _clean_number(predicted)
    try:
        return None not in (expected, predicted) and abs(Fraction(predicted) - Fraction(expected)) < Fraction(1, 10**6)
    except (ValueError, ZeroDivisionError):
        return False


# -- MATH ---------------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    brace = rest.find("{")
    if brace < 0:
        # "\boxed 5" form
        match = re.match(r"\\boxed\s+([^\s$]+)", rest)
        return match.group(1) if match else None
    depth = 0
    for index in range(brace, len(rest)):
        if rest[index] == "{":
            depth += 1
        elif rest[index] == "}":
            depth -= 1
            if depth == 0:
                return rest[brace + 1 : index]
    return None


def extract_math(text: str) -> str | None:
    """The boxed answer; failing that, the Minerva-style "The final answer is $X$"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    match = re.search(r"final answer is\s*\$(.+?)\$", text, re.IGNORECASE)
    return match.group(1) if match else None


def _strip_math(answer: str) -> str:
    text = answer.strip()
    text = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", text)
    text = re.sub(r"\\mbox\{\s*([^}]*)\}", r"\1", text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                     ("dfrac", "frac"), ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\$", ""),
                     ("$", ""), ("\\%", ""), ("%", ""), ("\\displaystyle", "")):
        text = text.replace(old, new)
    text = re.sub(r"\s+", "", text)
    text = text.rstrip(".")
    # a leading "x=" names the variable, not the answer
    if re.match(r"^[a-zA-Z]\s*=", text) and "," not in text:
        text = text.split("=", 1)[1]
    text = re.sub(r"(units?|degrees?|cm|inches|meters|dollars)$", "", text)
    # \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2}
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\{([^{}]+)\}(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)
    if text.startswith("0.") is False and re.fullmatch(r"\.\d+", text):
        text = "0" + text
    text = text.replace(",\\!", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return text


def _as_number(text: str) -> Fraction | None:
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text)
    try:
        if match:
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) else value
        if re.fullmatch(r"-?\d+/\d+|-?\d+(\.\d+)?", text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _sympy_equal(left: str, right: str) -> bool:
    """Last resort: both sides as sympy expressions (simple LaTeX only), equal if their difference is 0."""
    try:
        import sympy
        from sympy.parsing.sympy_parser import (
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )
    except ImportError:  # pragma: no cover - sympy comes with torch
        return False

    def parse(text: str):
        text = re.sub(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", r"((\1)/(\2))", text)
        text = re.sub(r"\\sqrt\{([^{}]+)\}", r"sqrt(\1)", text)
        text = text.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
        text = text.replace("{", "(").replace("}", ")")
        if "\\" in text or "=" in text:
            raise ValueError(text)
        return parse_expr(text, transformations=(*standard_transformations, implicit_multiplication_application),
                          evaluate=True)

    try:
        return bool(sympy.simplify(parse(left) - parse(right)) == 0)
    except Exception:  # noqa: BLE001 - anything sympy cannot read is simply "not shown equal"
        return False


def math_equal(predicted: str | None, gold: str) -> bool:
    """Mathematical equivalence of two final answers: normalized text, then numbers, then sympy."""
    if predicted is None:
        return False
    left, right = _strip_math(predicted), _strip_math(gold)
    if left == right:
        return True
    a, b = _as_number(left), _as_number(right)
    if a is not None and b is not None:
        return a == b
    if "," in left or "," in right:  # tuples and lists: compare item by item
        lefts, rights = left.strip("()[]").split(","), right.strip("()[]").split(",")
        if left[:1] != right[:1] or len(lefts) != len(rights):
            return False
        return all(math_equal(x, y) for x, y in zip(lefts, rights, strict=True))
    return _sympy_equal(left, right)


# -- multiple choice ----------------------------------------------------------------------------


def extract_choice(text: str, labels: tuple[str, ...] | str = "ABCD", choices: tuple[str, ...] = ()) -> str | None:
    """The option letter an answer picks, or None.

    Looks, in order, for "answer is (X)" / "Answer: X" style statements, a reply that starts with the
    letter ("C", "C.", "(C)", "C) ..."), a lone letter anywhere, and finally the text of exactly one option.
    """
    labels = tuple(labels)
    letters = "".join(labels)
    if not text or not letters:
        return None
    cls = f"[{letters}]"
    listed = set(re.findall(rf"^\s*\(?({cls})[\.\)]", text, flags=re.MULTILINE))
    if len(listed) >= 2 and not re.search(r"answer", text, flags=re.IGNORECASE):
        return None  # the model repeats the list of options instead of choosing one
    statements = (
        rf"answer\s*(?:is|:)?\s*(?:option\s*)?[\(\[]?\**({cls})\b",
        rf"(?:option|choice)\s*[\(\[]?({cls})\b",
        rf"correct (?:answer|option|choice)[^A-Za-z]{{0,12}}[\(\[]?({cls})\b",
    )
    for pattern in statements:
        # "answer is a ..." in lower case is the article, not option A: the letter must be a capital
        found = [letter for letter in re.findall(pattern, text, flags=re.IGNORECASE) if letter in labels]
        if found:
            return found[0]
    head = re.match(rf"\s*[\(\[\*]*({cls})(?:[\)\]\.:,\*]|\s|$)", text)
    if head and not re.match(r"\s*A\s+[a-z]", text):  # "A dog ..." is an article, not option A
        return head.group(1)
    lone = set(re.findall(rf"(?<![A-Za-z'])[\(\[]?({cls})[\)\]]?(?![A-Za-z'])", text))
    # a lone capital "A" is also an English article: only trust it when it is the only candidate and
    # is not followed by a lower-case word
    lone = {letter for letter in lone if not re.search(rf"(?<![A-Za-z]){letter} [a-z]", text)} if "A" in lone else lone
    if len(lone) == 1:
        return lone.pop()
    if choices:
        lowered = text.lower()
        # the labels default to "ABCD" whatever the number of choices: read the pairs there are
        pairs = zip(labels, choices, strict=False)
        named = [label for label, choice in pairs if choice and choice.lower().strip(".") in lowered]
        if len(named) == 1:
            return named[0]
    return None


def score(
    kind: str, response: str, gold: str, labels: tuple[str, ...] = (), choices: tuple[str, ...] = ()
) -> tuple[str | None, bool]:
    """(extracted answer or None, correct) for a question of ``kind`` (number, math or choice)."""
    if kind == "number":
        predicted = extract_number(response)
        return predicted, numbers_equal(predicted, gold)
    if kind == "math":
        predicted = extract_math(response)
        return predicted, math_equal(predicted, gold)
    predicted = extract_choice(response, labels or "ABCD", choices)
    return predicted, predicted == gold
