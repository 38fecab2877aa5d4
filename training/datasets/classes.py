"""Class schemes: how each dataset's annotated emotion maps onto the classes a model is trained on.

Emotion names are normalised first (case, spacing, common synonyms), then a scheme maps them to its
classes; an emotion the scheme does not cover is *dropped* (counted and reported), never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engines.card import NONE_LABEL  # the class of windows that are not micro-expressions

__all__ = ["NONE_LABEL", "SCHEMES", "ClassScheme", "SchemeError", "get_scheme", "normalize_emotion"]


class SchemeError(ValueError):
    """An unknown class scheme name."""


_SYNONYMS = {
    "happy": "happiness",
    "happiness": "happiness",
    "joy": "happiness",
    "surprised": "surprise",
    "surprise": "surprise",
    "sad": "sadness",
    "sadness": "sadness",
    "angry": "anger",
    "anger": "anger",
    "disgusted": "disgust",
    "disgust": "disgust",
    "fearful": "fear",
    "fear": "fear",
    "contempt": "contempt",
    "repression": "repression",
    "other": "others",
    "others": "others",
    "negative": "negative",
    "positive": "positive",
}


def normalize_emotion(value: object) -> str:
    """'Happiness ' → 'happiness', 'Other' → 'others', 'sad' → 'sadness'; unknown words pass lower-cased."""
    text = re.sub(r"\s+", " ", str(value if value is not None else "")).strip().lower()
    return _SYNONYMS.get(text, text)


@dataclass(frozen=True)
class ClassScheme:
    """A named set of classes (model label order) and the emotions that map to each."""

    name: str
    labels: tuple[str, ...]
    members: tuple[tuple[str, tuple[str, ...]], ...]  # (class, normalised emotions)

    def classify(self, emotion: str) -> str | None:
        """The class of a (raw or normalised) emotion, or None when this scheme drops it."""
        emotion = normalize_emotion(emotion)
        for label, emotions in self.members:
            if emotion in emotions:
                return label
        return None


SCHEMES: dict[str, ClassScheme] = {
    # MEGC 2019 composite 3-class scheme, usable for every dataset.
    "megc3": ClassScheme(
        name="megc3",
        labels=("negative", "positive", "surprise"),
        members=(
            ("negative", ("negative", "disgust", "repression", "anger", "contempt", "fear", "sadness")),
            ("positive", ("positive", "happiness")),
            ("surprise", ("surprise",)),
        ),
    ),
    # megc3 plus "none": windows that are not micro-expressions (talking, blinks, head turns the spotter
    # found in real footage), so a model can veto a false window instead of naming an emotion for it.
    "megc3n": ClassScheme(
        name="megc3n",
        labels=("negative", "positive", "surprise", NONE_LABEL),
        members=(
            ("negative", ("negative", "disgust", "repression", "anger", "contempt", "fear", "sadness")),
            ("positive", ("positive", "happiness")),
            ("surprise", ("surprise",)),
            (NONE_LABEL, (NONE_LABEL,)),
        ),
    ),
    # CASME-II 5-class scheme (fear and sadness, too rare in CASME-II, are dropped).
    "casme5": ClassScheme(
        name="casme5",
        labels=("happiness", "disgust", "repression", "surprise", "others"),
        members=(
            ("happiness", ("happiness",)),
            ("disgust", ("disgust",)),
            ("repression", ("repression",)),
            ("surprise", ("surprise",)),
            ("others", ("others",)),
        ),
    ),
}


def get_scheme(scheme: str | ClassScheme) -> ClassScheme:
    """A scheme by name (``megc3``, ``megc3n``, ``casme5``) or the scheme itself."""
    if isinstance(scheme, ClassScheme):
        return scheme
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise SchemeError(f"unknown class scheme {scheme!r}; choose one of {sorted(SCHEMES)}") from None
