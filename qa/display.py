"""Results as the command line prints them (`qa ask` without --json)."""

from __future__ import annotations

from qa.types import Result


def format_result(result: Result) -> str:
    """What `qa ask` prints: the answers with their citations, or the abstention, its best guess
    (never presented as an answer) and the passage it comes from."""
    lines = []
    if not result.answers:
        guess = result.guess
        if guess is None:
            lines.append("The article does not say (nothing in it answers the question).")
        else:
            lines.append("The article does not say clearly (no answer is confident enough).")
            lines.append(f"best guess (confidence {guess.score:.2f}): {guess.text}")
            lines.append(f"  {guess.doc_id}, chunk {guess.chunk_id}, characters {guess.start}-{guess.end}")
            lines.extend([f"  from {guess.source()}"] if guess.source() else [])
        if result.passages:
            # The passage the guess comes from, else the closest one retrieved.
            at = [
                p
                for p in result.passages
                if guess and (p.chunk.doc_id, p.chunk.chunk_id) == (guess.doc_id, guess.chunk_id)
            ]
            p = (at or result.passages)[0].chunk
            lines.append(f"Closest passage: {p.doc_id}, chunk {p.chunk_id}, characters {p.start}-{p.end}:")
            snippet = " ".join(p.text[:300].split())  # one indented line, whatever the article's line breaks
            lines.append(f"  {snippet}{'…' if len(p.text) > 300 else ''}")
        return "\n".join(lines)
    for n, a in enumerate(result.answers, 1):
        prefix = "Answer" if len(result.answers) == 1 else f"Answer {n}"
        lines.append(f"{prefix}: {a.text}")
        lines.append(f"  confidence {a.score:.2f} · {a.doc_id}, chunk {a.chunk_id}, characters {a.start}-{a.end}")
        lines.extend([f"  from {a.source()}"] if a.source() else [])  # a web page's or PDF's title, date, URL
        lines.append(f"  “{a.sentence}”")
    return "\n".join(lines)
