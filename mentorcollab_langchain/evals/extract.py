"""Answer extraction and scoring: the final number (GSM8K), ``\\boxed{}`` with mathematical
equivalence (MATH), the option letter (multiple choice).

Every extractor returns ``None`` when it finds no answer; the runner counts such answers as wrong and
counts them separately, so a format problem is never mistaken for a reasoning problem.
"""

from __future__ import annotations

import re
from fractions import Fraction

# -- numbers (GSM8K) ---------------------------------------------------------------------------

# A number as written: a sign (ASCII or Unicode minus, against the digits: "5 - 3" is a subtraction), an
# optional dollar sign, digits with thousands separators only in groups of three ("1,234,567"; "3,4" is two
# numbers), decimals. (verifier_training reads the numbers of a text with it.)
_INTEGER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_NUMBER = rf"[-\u2212]?(?:\$\s?)?(?:{_INTEGER}(?:\.\d+)?|\.\d+)"
# An answer may also be a fraction ("3/4", not the date "10/2/2024"), and a scale word after it ("1.5
# million") multiplies it.
_ANSWER = rf"(?:{_NUMBER})(?:/\d+(?![/.,]?\d))?"
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_SCALED = rf"({_ANSWER})(?:\s*({'|'.join(_SCALES)})\b)?"
_FINAL_PATTERNS = (
    re.compile(r"answer is[:\s]*\**\s*" + _SCALED, re.IGNORECASE),
    re.compile(r"####\s*" + _SCALED),
    re.compile(r"final answer[^\d\-\u2212$]{0,20}" + _SCALED, re.IGNORECASE),
    re.compile(r"\banswer\s*[:=]\s*\**\s*" + _SCALED, re.IGNORECASE),  # "Answer: 18" (chat style)
    re.compile(r"\\boxed\{\s*(" + _ANSWER + r")\s*\}"),
)


def _clean_number(text: str, scale: str | None = None) -> str | None:
    """A number's value as canonical text: an integer without separators, else a decimal ("0.75" for 3/4)."""
    cleaned = text.replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if scale:
        value *= _SCALES[scale.lower()]
    if value.denominator == 1:
        return str(value.numerator)
    return str(float(value))


def extract_number(text: str) -> str | None:
    """The final number of a GSM8K answer: after "The answer is", "####", "final answer", "Answer:" or in
    ``\\boxed{}`` (the first of these markers that occurs), else the last number in the text.

    "$1,234.50" reads as 1234.5, "3/4" as 0.75, "1.5 million" as 1500000, "25%" as 25.
    """
    for pattern in _FINAL_PATTERNS:
        match = pattern.search(text)
        if match:
            return _clean_number(match.group(1), match.group(2) if pattern.groups > 1 else None)
    numbers = re.findall(_SCALED, text)
    return _clean_number(*numbers[-1]) if numbers else None


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
    """The boxed answer; failing that, the Minerva-style "The final answer is $X$"; failing that, the last
    "The answer is $X$" (or ``\\(X\\)``) in math mode. An answer stated in prose only is None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    match = re.search(r"final answer is\s*\$(.+?)\$", text, re.IGNORECASE)
    if match:
        return match.group(1)
    stated = re.findall(r"answer is[:\s]*(?:\$([^$]+)\$|\\\((.+?)\\\))", text, re.IGNORECASE)
    return next((dollars or parens for dollars, parens in reversed(stated)), None)


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
    # a multiple-choice MATH answer: \text{(C)}, (C) and C are the same letter
    text = re.sub(r"^\(([A-E])\)$", r"\1", text)
    return text


def _as_number(text: str) -> Fraction | None:
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text)
    mixed = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", text)  # 1\frac{4}{5} is 9/5
    try:
        if match:
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) else value
        if mixed:
            value = int(mixed.group(2)) + Fraction(int(mixed.group(3)), int(mixed.group(4)))
            return -value if mixed.group(1) else value
        if re.fullmatch(r"-?\d+/\d+|-?\d+(\.\d+)?", text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _group(text: str, start: int) -> tuple[str, int] | None:
    """The braced group opening at ``text[start]`` (``{...}``, nesting allowed): (its content, the index
    after it); a single character stands for itself (``\\frac12``). None when the group is not closed."""
    if start >= len(text):
        return None
    if text[start] != "{":
        return text[start], start + 1
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1 : index], index + 1
    return None


def _latex_to_expression(text: str) -> str:
    """Simple LaTeX as a sympy expression: ``\\frac``, ``\\sqrt`` (and ``\\sqrt[n]``) with nested braces,
    ``\\pi``, ``\\cdot``, ``\\times``, ``^``. Anything else with a backslash (or an ``=``) is not read."""
    out, index = [], 0
    while index < len(text):
        if text.startswith("\\frac", index):
            numerator = _group(text, index + 5)
            denominator = numerator and _group(text, numerator[1])
            if not denominator:
                raise ValueError(text)
            out.append(f"(({_latex_to_expression(numerator[0])})/({_latex_to_expression(denominator[0])}))")
            index = denominator[1]
        elif text.startswith("\\sqrt", index):
            index += 5
            root = "2"
            if text.startswith("[", index):
                close = text.index("]", index)
                root, index = text[index + 1 : close], close + 1
            radicand = _group(text, index)
            if not radicand:
                raise ValueError(text)
            out.append(f"(({_latex_to_expression(radicand[0])})**(1/({root})))")
            index = radicand[1]
        else:
            out.append(text[index])
            index += 1
    expression = "".join(out)
    expression = expression.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    expression = expression.replace("{", "(").replace("}", ")")
    # sympy evaluates what it parses: only arithmetic on numbers, one-letter symbols, sqrt and pi gets there
    names = set(re.findall(r"[A-Za-z_]{2,}", expression)) - {"sqrt", "pi"}
    if names or "\\" in expression or "=" in expression or not re.fullmatch(r"[\w\s+\-*/().]*", expression):
        raise ValueError(text)
    return expression


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
        return parse_expr(_latex_to_expression(text),
                          transformations=(*standard_transformations, implicit_multiplication_application),
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


def _named_letter(letter: str, bracketed: bool, after: str, labels: tuple[str, ...]) -> str | None:
    """The option a letter found after "answer is" (or "option") names, or None.

    A capital is the option. A lower-case letter is the option when it is bracketed ("(c)") and otherwise
    too, except the article: "answer is a gas" names no option, and "e.g." is not option E.
    """
    if letter in labels:
        return letter
    if letter.upper() not in labels or not letter.islower():
        return None
    if not bracketed and ((letter == "a" and re.match(r"\s+[a-z]", after)) or re.match(r"\.[a-z]", after)):
        return None
    return letter.upper()


def _names_another(after: str, labels: tuple[str, ...]) -> bool:
    """Whether the text right after a letter names a second option: "B and C", "B or C", "(b), (c)", "B/C"."""
    letters = "".join(labels)
    second = rf"(?:[\(\[]\s*[{letters}{letters.lower()}]\s*[\)\]]|[{letters}](?![A-Za-z']))"
    joint = r"(?:,\s*(?:and|or)?|\band\b|\bor\b|&|/)"
    return bool(re.match(rf"[\)\]\*\.]?\s*{joint}\s*(?:option\s*)?\**{second}", after, flags=re.IGNORECASE))


def extract_choice(text: str, labels: tuple[str, ...] | str = "ABCD", choices: tuple[str, ...] = ()) -> str | None:
    """The option letter an answer picks, or None.

    Looks, in order, for "answer is (X)" / "Answer: X" style statements, a reply that starts with the
    letter ("C", "C.", "(C)", "C) ..."), a lone letter anywhere, and finally the text of exactly one option.
    A bracketed lower-case letter ("I would say (c)") is the option too.

    Two options named together ("B and C", "The answer is B or C", "(b), (c)") are no answer: the question
    has one right option, and crediting the first named would reward hedging. Such a reply is None,
    counted as unparsed.
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
        rf"answer\s*(?:is\b|:)?[\s:\*]*(?:option\s*)?([\(\[])?\**({cls})\b",
        rf"(?:option|choice)\s*([\(\[])?({cls})\b",
        rf"correct (?:answer|option|choice)[^A-Za-z\(\[]{{0,12}}([\(\[])?({cls})\b",
    )
    for pattern in statements:
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            letter = _named_letter(match.group(2), bool(match.group(1)), text[match.end() :], labels)
            if letter:
                return None if _names_another(text[match.end() :], labels) else letter
    head = re.match(rf"\s*[\(\[\*]*({cls})(?:[\)\]\.:,\*]|\s|$)", text) or re.match(
        rf"\s*[\(\[]({cls.lower()})[\)\]]", text
    )
    if head and not re.match(r"\s*A\s+[a-z]", text):  # "A dog ..." is an article, not option A
        return None if _names_another(text[head.end(1) :], labels) else head.group(1).upper()
    lone = set(re.findall(rf"(?<![A-Za-z'])[\(\[]?({cls})[\)\]]?(?![A-Za-z'])", text))
    # a lone capital "A" is also an English article: only trust it when it is the only candidate and
    # is not followed by a lower-case word
    lone = {letter for letter in lone if not re.search(rf"(?<![A-Za-z]){letter} [a-z]", text)} if "A" in lone else lone
    lone |= {letter.upper() for letter in re.findall(rf"[\(\[]({cls.lower()})[\)\]]", text)}
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
