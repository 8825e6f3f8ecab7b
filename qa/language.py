"""Whether a question is in English, the one language the reader reads (it was trained on SQuAD).

A question in another language is still asked (the article may be quoted in it, or a name may be
all it needs), but it gets a note saying why the answer is likely missing or wrong. The test is
cheap and conservative, so that an English question about foreign names is never flagged: most
letters in a script other than Latin, or the function words of another language (French, German,
Spanish, Italian, Portuguese, Dutch) outnumbering English ones outside quotation marks.
"""

from __future__ import annotations

import re
import unicodedata

NOTE = "Note: the question does not look like English; the reader reads English, so ask in English for an answer."

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|«[^»]*»|„[^“”]*[“”]')  # a quotation may be in any language
_ENGLISH = frozenset(
    " ".join(
        (
            "the a an of in on at to for from by with about and or is are was were be been has have had do does",
            "did who whom whose what when where why how which many much long it its this that these those there",
            "they he she his her their will would can could should not",
        )
    ).split()
)
# Common words of other languages that are not also English words ("die", "was", "come", "per", "van"
# are left out: an English question may hold them).
_OTHER = (
    frozenset(
        " ".join(
            (
                "le la les des du une est qui que quoi quel quelle quels quelles où pourquoi comment quand combien",
                "dans pour avec sur sont ont été",
                "der das den dem ein eine einen ist wer wann wo warum welche welcher welches und mit für von sind",
                "wurde",
                "el los las una es quién quiénes qué cuándo dónde por cómo cuál cuáles cuántos cuántas y con para",
                "del según",
                "il gli chi che cosa quando perché quale è della delle di ha sono",
                "os um uma é quem onde porque qual quais do da em com são foi",
                "het een wie wat wanneer waar waarom hoe welke en heeft zijn",
            )
        ).split()
    )
    - _ENGLISH
)


def english_note(question: str) -> str | None:
    """NOTE when `question` does not look like English, else None."""
    letters = [c for c in question if c.isalpha()]
    if not letters:
        return None
    latin = sum("LATIN" in unicodedata.name(c, "") for c in letters)
    if 2 * latin < len(letters):
        return NOTE
    words = [w.lower() for w in _WORD.findall(_QUOTED.sub(" ", question))]
    english = sum(w in _ENGLISH for w in words)
    other = sum(w in _OTHER for w in words) + question.lstrip().startswith(("¿", "¡"))
    if (other >= 2 and other > english) or (other >= 1 and english == 0 and len(words) >= 3):
        return NOTE
    return None
