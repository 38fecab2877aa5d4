"""The learned spotter's front end (grid features), its decoder, its card and model file, and the chain's choice
of spotter — without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.card import CardError
from engines.spotting_model import SpottingCard, SpottingModel, load_spotting_model, pool_regions
from mer_analysis.chain import Analyzer, AnalyzerOptions
from mer_analysis.learned_spotting import (
    FeatureRecorder,
    LearnedSpotter,
    LearnedSpotterOptions,
    RunDecoder,
    decode_rows,
    judged_step,
)
from mer_analysis.motion import REGION_NAMES, MotionSample
from mer_analysis.spot_features import FEATURE_VERSION, FEATURES, GridRow, SpotFeatureOptions, SpotFeatures
from mer_analysis.spotting import Spotter
from mer_core.events import TimePoint

R, C = len(REGION_NAMES), len(FEATURES)


def _card(**changes: object) -> SpottingCard:
    base = {"name": "fake", "features": FEATURES, "feature_version": FEATURE_VERSION, "regions": REGION_NAMES,
            "context": 4, "lookahead": 3, "peak": 0.6, "edge": 0.4, "min_duration_s": 0.1, "max_duration_s": 0.6}
    base.update(changes)
    return SpottingCard(**base)  # type: ignore[arg-type]


def _sample(k: int, fps: float, size: float = 0.0, region: int = 0) -> MotionSample:
    d = np.zeros((R, 2), np.float32)
    d[region, 0] = size
    return MotionSample(k, k / fps, k - 1, d, 0.0, 0.3, np.zeros(R, np.float32), np.zeros((R, 2), np.float32))


class _FakeModel:
    """Region 0's logit is its displacement feature ``dx`` at the judged step, scaled: a movement of 0.02 IOD
    (dx = 1) reads as very likely."""

    def __init__(self, card: SpottingCard) -> None:
        self.card = card
        self.calls = 0

    def logits(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        b, r, c, t = features.shape
        n = t - self.card.context - self.card.lookahead
        out = np.full((b, r, n), -20.0, np.float32)
        judged = features[:, 0, FEATURES.index("dx"), self.card.context:self.card.context + n]
        out[:, 0, :] = 12.0 * judged - 6.0
        return out


# --- features on the grid ------------------------------------------------------------------------------------


def test_features_land_on_a_fixed_grid_whatever_the_frame_rate() -> None:
    for fps in (25.0, 30.0, 200.0):
        features = SpotFeatures(SpotFeatureOptions(rate_hz=30.0))
        rows: list[GridRow] = []
        for k in range(int(2 * fps)):
            rows += features.update(_sample(k, fps, size=0.02 * k / fps))
        steps = [r.step for r in rows]
        assert steps == list(range(steps[0], steps[0] + len(steps)))  # consecutive, one per 1/30 s
        assert len(rows) == pytest.approx(2 * 30.0 - 30.0 / fps, abs=2)
        # linear interpolation: dx grows as t (0.02 IOD a second = 1 feature unit a second)
        t = np.array([r.step / 30.0 for r in rows])
        dx = np.array([r.values[0, FEATURES.index("dx")] for r in rows])
        assert np.allclose(dx, t, atol=1e-4)
        # the nearest frame to each step is within half a frame
        assert all(abs(r.frame_t - r.step / 30.0) <= 0.5 / fps + 1e-9 for r in rows)


def test_face_loss_and_time_going_back_restart_the_grid() -> None:
    features = SpotFeatures()
    assert features.update(_sample(0, 30.0)) == []
    assert len(features.update(_sample(1, 30.0))) == 1
    assert features.update(None) == []
    assert features.update(_sample(2, 30.0)) == []  # no row bridges the gap
    assert features.update(_sample(1, 30.0)) == []  # time went back: restart


def test_feature_channels_say_what_they_measure() -> None:
    features = SpotFeatures()
    rows = features.update(_sample(0, 30.0)) + features.update(_sample(1, 30.0, size=0.04, region=3))
    v = rows[-1].values
    assert v[3, FEATURES.index("size")] == pytest.approx(2.0)  # 0.04 IOD in units of 0.02
    assert v[0, FEATURES.index("size")] == 0.0
    assert v[0, FEATURES.index("largest")] == pytest.approx(2.0)  # the face's channels are every region's
    assert v[3, FEATURES.index("relative")] > 1.0  # larger than the region's usual movement


# --- the card and the model file -----------------------------------------------------------------------------


def test_card_checks_and_round_trips() -> None:
    card = _card()
    assert SpottingCard.from_dict(json.loads(card.to_json())) == card
    assert card.window == 8 and card.delay_s == pytest.approx(0.1)
    with pytest.raises(CardError, match="edge <= peak"):
        _card(edge=0.7, peak=0.5)
    with pytest.raises(CardError, match="schema"):
        SpottingCard.from_dict({**card.to_dict(), "schema": "mer-spot-card/9"})


def test_pooling_is_a_soft_maximum_over_regions() -> None:
    logits = np.full((R, 2), -10.0, np.float32)
    logits[5, 0] = 3.0
    pooled = pool_regions(logits, 4.0)
    assert pooled[0] == pytest.approx(3.0 - np.log(R) / 4.0, abs=1e-3)
    assert pooled[1] < -10.0 + 1e-3


def test_a_file_that_is_no_spotting_model_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="spotting model not found"):
        load_spotting_model(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(Exception, match="cannot load bad.onnx"):
        SpottingModel(bad)
    text = tmp_path / "model.pt"
    text.write_bytes(b"x")
    with pytest.raises(Exception, match="an .onnx file written by mer-train spot"):
        load_spotting_model(text)


def test_without_a_bundled_spotting_model_the_chain_runs_the_rule_spotter() -> None:
    # No learned spotter ships (person-fold figures did not beat the rules: docs/spotting.md); when one does,
    # it must load and fit this chain's features.
    from engines.spotting_model import DEFAULT_SPOTTING_MODEL, default_spotting_model

    model = default_spotting_model()
    if DEFAULT_SPOTTING_MODEL.is_file():
        assert model is not None
        assert model.card.features == FEATURES and model.card.regions == REGION_NAMES
        x = np.zeros((1, R, C, model.card.window + 2), np.float32)
        assert model.logits(x).shape == (1, R, 3)
    else:
        assert model is None
        with pytest.raises(Exception, match="spotting model not found"):
            load_spotting_model()


# --- decoding --------------------------------------------------------------------------------------------------


def _stream(spotter: LearnedSpotter, fps: float, bumps: list[tuple[int, int]], n: int) -> list:
    out = []
    for k in range(n):
        size = 0.02 if any(a <= k <= b for a, b in bumps) else 0.0
        out += spotter.update(_sample(k, fps, size=size), index=k, t=k / fps)
    return out + spotter.flush()


def test_a_movement_becomes_one_window_from_its_first_frame_to_its_last() -> None:
    model = _FakeModel(_card())
    spotter = LearnedSpotter(model)
    windows = _stream(spotter, 30.0, [(40, 49)], 120)
    assert [(w.onset.frame, w.offset.frame, w.kind) for w in windows] == [(40, 49, "micro")]
    w = windows[0]
    assert w.region == REGION_NAMES[0] and 0.6 <= w.peak <= 1.0 and 40 <= w.apex.frame <= 49
    # decided once the look-ahead after the offset has been seen, not before
    assert w.decided_at.frame >= 49 + model.card.lookahead


def test_too_short_too_long_and_weak_runs_are_dropped() -> None:
    model = _FakeModel(_card())
    assert _stream(LearnedSpotter(model), 30.0, [(40, 41)], 120) == []  # 2 steps < 0.1 s
    assert _stream(LearnedSpotter(model), 30.0, [(40, 70)], 160) == []  # 1 s > max_duration
    strict = LearnedSpotter(model, LearnedSpotterOptions(peak=0.9999))
    assert _stream(strict, 30.0, [(40, 49)], 120) == []


def test_batch_decoding_equals_streaming() -> None:
    card = _card()
    model = _FakeModel(card)
    streamed = _stream(LearnedSpotter(model), 25.0, [(30, 37), (80, 88)], 150)
    features = SpotFeatures(SpotFeatureOptions(rate_hz=card.rate_hz, level_s=card.level_s))
    rows: list[GridRow] = []
    for k in range(150):
        size = 0.02 if (30 <= k <= 37 or 80 <= k <= 88) else 0.0
        rows += features.update(_sample(k, 25.0, size=size))
    x = np.stack([r.values for r in rows]).transpose(1, 2, 0)[None]
    logits = np.full((R, len(rows)), np.nan, np.float32)
    logits[:, card.context:len(rows) - card.lookahead] = model.logits(x)[0]
    batch = decode_rows(rows, logits, card)
    assert [(w.onset, w.apex, w.offset) for w in batch] == [(w.onset, w.apex, w.offset) for w in streamed]
    assert len(batch) == 2


def test_decoder_closes_a_run_at_a_gap_in_the_grid() -> None:
    card = _card()
    decoder = RunDecoder(card, 0.5)
    rows = [GridRow(s, s, s / 30.0, np.zeros((R, C), np.float32)) for s in (10, 11, 12, 13, 20)]
    high = np.full(R, 5.0, np.float32)
    out = []
    for row in rows:
        out += decoder.push(judged_step(row, high, card), TimePoint(row.frame, row.frame_t))
    assert [(w.onset.frame, w.offset.frame) for w in out] == [(10, 13)]


def test_the_chain_runs_the_learned_spotter_when_given_a_model_and_the_rules_otherwise() -> None:
    class _NoTracker:
        def process(self, frame: np.ndarray, t: float) -> None:
            return None

    card = _card()
    assert isinstance(Analyzer(_NoTracker()).spotter, Spotter)
    learned = Analyzer(_NoTracker(), spot_model=_FakeModel(card))
    assert isinstance(learned.spotter, LearnedSpotter) and learned.spotting == "learned"
    rules = Analyzer(_NoTracker(), AnalyzerOptions(spotting="rules"), spot_model=_FakeModel(card))
    assert isinstance(rules.spotter, Spotter)
    assert isinstance(Analyzer(_NoTracker(), AnalyzerOptions(spotting="features")).spotter, FeatureRecorder)
    with pytest.raises(ValueError, match="motion over"):
        Analyzer(_NoTracker(), spot_model=_FakeModel(_card(motion_lag_s=0.1)))
    with pytest.raises(ValueError, match="retrain"):
        LearnedSpotter(_FakeModel(_card(features=("dx",))))
