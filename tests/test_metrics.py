"""mer_core.metrics: MEGC spotting scores and pooled recognition scores, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mer_analysis.spotting import SpottedWindow
from mer_core.events import TimePoint
from mer_core.metrics import (
    Interval,
    SpottingScores,
    frame_iou,
    match_windows,
    recognition_scores,
    spotting_report,
    spotting_scores,
    to_interval,
)

# --- IoU ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 9), (0, 9), 1.0),
        ((0, 9), (0, 4), 0.5),  # 5 of 10 frames: exactly the MEGC threshold
        ((0, 9), (5, 14), 5 / 15),
        ((0, 9), (3, 12), 7 / 13),
        ((0, 4), (5, 9), 0.0),  # adjacent, no shared frame
        ((0, 5), (5, 9), 0.1),  # one shared frame of ten
        ((5, 5), (5, 5), 1.0),  # single-frame windows
        ((5, 5), (5, 6), 0.5),
    ],
)
def test_frame_iou_counts_frames_inclusive(a: tuple[int, int], b: tuple[int, int], expected: float) -> None:
    assert frame_iou(a, b) == pytest.approx(expected)
    assert frame_iou(b, a) == pytest.approx(expected)


def test_iou_of_exactly_half_matches_and_just_below_does_not() -> None:
    assert match_windows([(0, 9)], [(0, 4)]) == [(0, 0, 0.5)]
    assert match_windows([(0, 9)], [(0, 3)]) == []  # 4 / 10
    assert spotting_scores([(0, 9)], [(0, 4)]).tp == 1


def test_windows_of_different_videos_never_match() -> None:
    a, b = Interval(0, 9, video="clip1"), Interval(0, 9, video="clip2")
    assert frame_iou(a, b) == 0.0
    scores = spotting_scores([a, Interval(20, 29, video="clip2")], [b, Interval(20, 29, video="clip2")])
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 1)


# --- matching -------------------------------------------------------------------------------------------


def test_matching_is_one_to_one() -> None:
    # Two predictions cover the same true window: one TP, one FP.
    scores = spotting_scores([(0, 9), (0, 10)], [(0, 9)])
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 0)
    assert match_windows([(0, 9), (0, 10)], [(0, 9)]) == [(0, 0, 1.0)]


def test_matching_is_greedy_by_iou_not_by_order() -> None:
    # The prediction overlaps T0 with IoU 9/11 and T1 with IoU 9/10: it takes T1.
    matches = match_windows([(0, 9)], [(1, 10), (0, 8)])
    assert [(i, j) for i, j, _ in matches] == [(0, 1)]
    assert matches[0][2] == pytest.approx(0.9)
    # Greedy keeps both pairs when each prediction has its own best partner.
    matches = match_windows([(0, 9), (2, 11)], [(2, 11), (0, 9)])
    assert [(i, j) for i, j, _ in matches] == [(0, 1), (1, 0)]


def test_hand_computed_precision_recall_f1() -> None:
    pred = [(0, 9), (20, 29), (40, 49)]
    true = [(0, 9), (21, 30), (60, 69), (80, 89)]
    s = spotting_scores(pred, true)
    assert (s.tp, s.fp, s.fn) == (2, 1, 2)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(4 / 7)  # 2 TP / (2 TP + FP + FN) * 2


@pytest.mark.parametrize(("pred", "true", "counts"), [([], [], (0, 0, 0)), ([(0, 9)], [], (0, 1, 0)),
                                                        ([], [(0, 9)], (0, 0, 1))])
def test_empty_inputs_give_zeros_not_nan(pred: list, true: list, counts: tuple[int, int, int]) -> None:
    s = spotting_scores(pred, true)
    assert (s.tp, s.fp, s.fn) == counts
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    assert match_windows(pred, true) == []
    report = spotting_report([], [])
    assert all(not math.isnan(v.f1) for v in report.values())


def test_micro_and_macro_are_matched_apart_and_pooled_overall() -> None:
    pred = [(0, 9, "micro"), (100, 160, "macro"), (200, 209, "micro")]
    true = [(0, 9, "macro"), (100, 160, "macro"), (200, 210, "micro")]
    report = spotting_report(pred, true)
    assert (report["micro"].tp, report["micro"].fp, report["micro"].fn) == (1, 1, 0)
    assert (report["macro"].tp, report["macro"].fp, report["macro"].fn) == (1, 0, 1)
    overall = report["overall"]
    assert (overall.tp, overall.fp, overall.fn) == (2, 1, 1)
    assert overall == report["micro"] + report["macro"]
    # Ignoring kinds, the first pair matches too.
    assert spotting_scores(pred, true).tp == 3
    assert spotting_scores(pred, true, kind="macro").tp == 1


def test_report_needs_kinds() -> None:
    with pytest.raises(ValueError, match="kind"):
        spotting_report([(0, 9)], [(0, 9, "micro")])


def test_spotted_windows_and_timepoints_are_read_directly() -> None:
    window = SpottedWindow(onset=TimePoint(10, 1.0), apex=TimePoint(14, 1.4), offset=TimePoint(19, 1.9),
                           kind="micro", peak=1.0, decided_at=TimePoint(24, 2.4))
    assert to_interval(window) == Interval(10, 19, "micro")
    assert spotting_report([window], [(10, 19, "micro")])["micro"].f1 == 1.0


def test_interval_rejects_offset_before_onset() -> None:
    with pytest.raises(ValueError, match="before its onset"):
        Interval(10, 9)


def test_scores_add_up_counts() -> None:
    a, b = SpottingScores.from_counts(1, 0, 1), SpottingScores.from_counts(2, 2, 0)
    assert a + b == SpottingScores.from_counts(3, 2, 1)


# --- recognition ----------------------------------------------------------------------------------------

Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]


def test_recognition_small_confusion_by_hand() -> None:
    s = recognition_scores(Y_TRUE, Y_PRED, ["a", "b", "c"])
    np.testing.assert_array_equal(s.confusion, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert s.accuracy == pytest.approx(4 / 6)
    # a: tp 2, 3 true, 2 predicted -> recall 2/3, F1 4/5; b: 1, 2, 2 -> 1/2, 1/2; c: 1, 1, 2 -> 1, 2/3
    assert s.per_class_recall == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert s.per_class_f1 == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert s.uf1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s.uar == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_class_absent_from_both_sides_is_left_out_of_the_means() -> None:
    s = recognition_scores(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert s.confusion.shape == (4, 4)
    assert s.uf1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s.uar == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert s.per_class_f1["d"] == 0.0 and s.per_class_recall["d"] == 0.0


def test_class_only_predicted_counts_in_uf1_not_in_uar() -> None:
    s = recognition_scores(["a", "a"], ["a", "d"], ["a", "d"])
    # a: tp 1, 2 true, 1 predicted -> recall 1/2, F1 2/3; d: never true, once predicted -> F1 0
    assert s.uf1 == pytest.approx((2 / 3 + 0.0) / 2)
    assert s.uar == pytest.approx(0.5)
    assert s.accuracy == pytest.approx(0.5)


def test_recognition_empty_and_default_labels() -> None:
    s = recognition_scores([], [], ["x", "y"])
    assert (s.accuracy, s.uf1, s.uar) == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(s.confusion, np.zeros((2, 2)))
    s = recognition_scores(["y", "x"], ["y", "y"])
    assert s.labels == ("x", "y")
    np.testing.assert_array_equal(s.confusion, [[0, 1], [0, 1]])


def test_recognition_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not among the labels"):
        recognition_scores(["a"], ["z"], ["a", "b"])
    with pytest.raises(ValueError, match="has 2 labels"):
        recognition_scores(["a", "b"], ["a"], ["a", "b"])
