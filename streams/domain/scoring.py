"""Engagement score of an attendee, 0-100, documented (docs/semantics.md "Engagement score") and recomputable by
replay."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Weights:
    dwell: float = 40.0
    chat: float = 15.0
    question: float = 15.0
    poll: float = 15.0
    cta: float = 15.0


@dataclass(frozen=True, slots=True)
class Grades:
    """Lowest engagement score of grades A, B and C; below C is D (docs/semantics.md "Leads and grades")."""

    a: float = 70.0
    b: float = 50.0
    c: float = 25.0


GRADES = ("A", "B", "C", "D")
MQL_GRADES = ("A", "B")  # marketing-qualified leads


def grade(g: Grades, score: float) -> str:
    if score >= g.a:
        return "A"
    if score >= g.b:
        return "B"
    return "C" if score >= g.c else "D"


def engagement_score(
    w: Weights,
    *,
    dwell_ms: int,
    elapsed_ms: int | None,
    chats: int,
    reactions: int,
    questions: int,
    polls_voted: int,
    polls_seen: int,
    cta_clicked: bool,
) -> float:
    """Terms are added in a fixed order so that a replay gives the same float to the last bit."""
    dwell_term = min(1.0, dwell_ms / elapsed_ms) if elapsed_ms and elapsed_ms > 0 else 0.0
    score = w.dwell * dwell_term
    score += w.chat * min(1.0, (chats + reactions) / 3)
    score += w.question * min(1.0, questions)
    score += w.poll * (polls_voted / polls_seen if polls_seen else 0.0)
    score += w.cta * (1.0 if cta_clicked else 0.0)
    return score
