"""Figures in a reply must come from somewhere: "never an invented fact" checked where it is cheapest
to check, on numbers. A small model fills a reply with plausible amounts, limits and durations ("$500
per parcel", "within 24 hours") that no passage says; a reader cannot tell them from real ones.

A figure is a number as written (``$1,250.00``, ``50``, ``4x6``'s ``4`` and ``6``, ``20%``), compared by
value, so ``$1,250`` in a reply is supported by ``1250 USD`` in a passage. Numbered-list markers at the
start of a line are layout, not figures. Pure functions; serving decides what to do with the result
(``serving/engine.enforce_grounding``): an answer whose reply still says something its cited passages
say once the sentences holding an invented figure are dropped (``without_sentences_holding``,
``still_grounded``) keeps its decision; otherwise it becomes the honest "not answerable" one.
Dropping the whole answer for one invented number would decline a ticket its documents answer. (On
the 24 sample tickets, 2026-12-04, the three answers the check touched had been declined by the model
itself, so this changed none of them.)
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from hybrid_assets.schema import LabelSpace

# A number not glued to a word on its left (``S1``, ``v2`` and ``KI-`` ids' letters are not figures;
# the ``102`` of ``KI-102`` is) with an optional currency sign, thousands separators and decimals.
_FIGURE = re.compile(r"(?<![\w.])[$€£]?(\d[\d,]*(?:\.\d+)?)")
_LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s", re.MULTILINE)
_DIMENSIONS = re.compile(r"(?<=\d)[x×](?=\d)")  # 4x6: two figures


def figures_in(text: str) -> set[str]:
    """The figures of ``text`` as canonical values (``"1250"``, ``"0.5"``)."""
    text = _DIMENSIONS.sub(" ", _LIST_MARKER.sub(" ", text))
    return {_canonical(m.group(1)) for m in _FIGURE.finditer(text)}


# Sentence ends: whitespace after . ! ? (so never inside "$0.08"), but not after a numbered step's
# marker ("1. Open ..."), and line breaks, which a reply's sign-off and steps sit behind.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b\d[.)])(?<!\b\d\d[.)])[ \t]+|\s*\n\s*")
_WORD = re.compile(r"[a-z]{4,}")


def without_sentences_holding(text: str, unsupported: Collection[str]) -> str:
    """``text`` less the sentences that hold one of the ``unsupported`` figures. What is kept is kept
    as written (its separators too), so a grounded sentence is never reworded."""
    if not unsupported:
        return text
    pieces = _SENTENCE_END.split(text)
    separators = [m.group(0) for m in _SENTENCE_END.finditer(text)]
    kept: list[str] = []
    for i, piece in enumerate(pieces):
        if figures_in(piece) & set(unsupported):
            continue
        if kept and i > 0:
            kept.append(separators[i - 1])
        kept.append(piece)
    return "".join(kept).strip()


def still_grounded(text: str, cited: Iterable[str], ignore: Iterable[str] = (), min_shared: int = 3) -> bool:
    """True when some sentence of ``text`` shares ``min_shared`` words (4+ letters) with the cited
    passages that ``ignore`` (the ticket, the sign-off) does not already hold: the reply still
    states something from the documents, not only a greeting and a sign-off."""
    source = set().union(*(set(_WORD.findall(t.lower())) for t in cited))
    common = set().union(*(set(_WORD.findall(t.lower())) for t in ignore))
    return any(len((set(_WORD.findall(sentence.lower())) & source) - common) >= min_shared
               for sentence in _SENTENCE_END.split(text))


def _canonical(number: str) -> str:
    number = number.replace(",", "").rstrip(".")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number.lstrip("0") or "0"


def label_names(labels: LabelSpace) -> list[str]:
    """The label space's own names as a reply writes them ("tier_2" -> "Tier 2"): names, not figures."""
    return [labels.company, *(v.replace("_", " ") for v in (*labels.escalation_levels, *labels.categories))]


@dataclass(frozen=True)
class FigureCheck:
    unsupported: tuple[str, ...]  # figures no cited passage, other retrieved passage nor the request holds
    cite_also: tuple[str, ...]  # retrieved but uncited passages that hold a figure the answer uses


def check_figures(written: Iterable[str], cited: Mapping[str, str], retrieved: Mapping[str, str],
                  given: Iterable[str] = (), names: Iterable[str] = (),
                  own: Collection[str] = ()) -> FigureCheck:
    """Where each figure of the ``written`` texts comes from. ``cited``/``retrieved``: passage id ->
    text; ``given``: what the request itself says (the ticket, earlier turns); ``names``: words whose
    figures are names, not quantities (label names like "Tier 2"); ``own``: ids of the passages that
    hold the customer's own data (their account), whose figures, once cited, are the customer's like
    the ticket's. A figure one arithmetic step from supported ones is supported ("80 extra labels at
    $0.08 add $6.40"; "15 bought, 2 scanned: 13 qualify"). A figure only an uncited retrieved passage
    holds is supported once that passage is cited (``cite_also``, first such passage in retrieval order)."""
    wanted = set().union(*(figures_in(t) for t in written))
    documented = set().union(*(figures_in(t) for t in cited.values()))
    stated = set().union(*(figures_in(t) for t in given), *(figures_in(cited[p]) for p in own if p in cited))
    uncited = {pid: figures_in(text) for pid, text in retrieved.items() if pid not in cited}
    cite_also: list[str] = []
    for figure in sorted(wanted - documented - stated, key=lambda f: (len(f), f)):
        holder = next((pid for pid, held in uncited.items() if figure in held), None)
        if holder is not None:
            documented.add(figure)
            if holder not in cite_also:
                cite_also.append(holder)
    named = set().union(*(figures_in(t) for t in names))
    unsupported = _derive(wanted - documented - stated - named, documented, stated)
    return FigureCheck(tuple(sorted(unsupported, key=lambda f: (len(f), f))), tuple(cite_also))


def _derive(open_figures: set[str], documented: set[str], stated: set[str]) -> set[str]:
    """``open_figures`` less those one +, -, x or / away from supported ones, where one operand is the
    customer's own (stated in the request, or derived from it): arithmetic applies the documents to the
    customer's case. Two document figures alone derive nothing, or a date's parts and a limit would
    "support" almost any amount. A derived figure is then the customer's own ("$99 plan + $210 of
    extra labels: $309"). Returns what stays unsupported."""
    own = {float(f) for f in stated}
    every = own | {float(f) for f in documented}
    remaining = set(open_figures)
    while remaining:
        derived = {f for f in remaining if _one_step(float(f), own, every)}
        if not derived:
            break
        remaining -= derived
        own |= {float(f) for f in derived}
        every |= own
    return remaining


def _one_step(target: float, own: set[float], every: set[float]) -> bool:
    def close(x: float) -> bool:
        return abs(x - target) <= max(0.005, 1e-6 * abs(target))  # cents
    # a - a and a / a would "derive" 0 and 1 from anything
    return any(close(a + b) or close(a - b) or close(b - a) or close(a * b) or (b and close(a / b))
               or (a and close(b / a)) for a in own for b in every if a != b)
