"""Training the learned spotter: raw motion round trips, a rendered expression the features see counts as
seen, a small network learns an easy pattern, and its ONNX export runs in the live spotter with the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.spotting_model import SpottingModel  # noqa: E402
from mer_analysis.learned_spotting import LearnedSpotter  # noqa: E402
from mer_analysis.motion import REGION_NAMES, MotionSample  # noqa: E402
from mer_analysis.spot_features import FEATURES  # noqa: E402
from training.spotter_data import RawMotion, SpotSequence, _sequence, rows_from_raw, visibility  # noqa: E402
from training.spotter_train import (  # noqa: E402
    SpotTrainOptions,
    card_for,
    export_spotter,
    match_counts,
    mirror,
    predict_logits,
    train_spotter,
    windows_of,
)

R = len(REGION_NAMES)
FPS = 30.0


def _raw(n: int, rng: np.random.Generator, noise: float = 0.0005) -> RawMotion:
    samples: list[MotionSample | None] = []
    for k in range(n):
        d = rng.normal(0.0, noise, (R, 2)).astype(np.float32)
        samples.append(MotionSample(k, k / FPS, k - 7 if k >= 7 else None, d if k >= 7 else None, 0.0, 0.3,
                                    np.zeros(R, np.float32), np.zeros((R, 2), np.float32)))
    return RawMotion.from_samples(samples, FPS)


def _bump(raw: RawMotion, start: int, region: int, size: float = 0.03, length: int = 12) -> RawMotion:
    """``raw`` with a rise-and-return of ``region`` (displacement over a 7-frame lag, as the meter gives)."""
    out = RawMotion(raw.fps, raw.present, raw.since, raw.disp.copy(), raw.geometry.copy(), raw.change.copy(),
                    raw.head, raw.eye, raw.face)
    shape = np.sin(np.linspace(0, np.pi, length)) * size
    position = np.zeros(len(raw.present))
    position[start:start + length] = shape
    moved = position - np.r_[np.zeros(7), position[:-7]]
    out.disp[:, region, 1] += moved.astype(np.float32)
    return out


def _seq(raw: RawMotion, truth: list[dict[str, object]], tag: str, person: str = "p") -> SpotSequence:
    return _sequence(rows_from_raw(raw), name=f"v {tag}", person=person, tag=tag, fps=FPS, rate_hz=30.0,
                     frames=len(raw.present), truth=truth, family="warp", raw=raw)


def test_raw_motion_round_trips_through_samples_and_arrays() -> None:
    raw = _raw(40, np.random.default_rng(0))
    again = RawMotion.from_samples(raw.samples(), FPS)
    assert np.array_equal(again.disp, raw.disp) and np.array_equal(again.present, raw.present)
    back = RawMotion.from_arrays(FPS, raw.arrays())
    assert np.array_equal(back.since, raw.since)
    assert not raw.present[:7].any() and raw.present[7:].all()


def test_a_rendered_expression_the_features_see_is_visible() -> None:
    rng = np.random.default_rng(1)
    original = _raw(300, rng)
    rendered = _bump(original, 100, REGION_NAMES.index("brow_inner_l"))
    truth: list[dict[str, object]] = [{"onset": 100, "apex": 106, "offset": 111, "kind": "micro"}]
    o, r = _seq(original, [], "original"), _seq(rendered, truth, "warp/calm@0.04#7")
    assert visibility(r, o).tolist() == [True]


def test_mirroring_swaps_sides_and_horizontal_movement() -> None:
    values = np.zeros((2, R, len(FEATURES)), np.float32)
    left, right = REGION_NAMES.index("cheek_l"), REGION_NAMES.index("cheek_r")
    values[:, left, FEATURES.index("dx")] = 1.0
    values[:, left, FEATURES.index("dy")] = 2.0
    out = mirror(values)
    assert out[0, right, FEATURES.index("dx")] == -1.0 and out[0, right, FEATURES.index("dy")] == 2.0
    assert out[0, left, FEATURES.index("dx")] == 0.0


def test_a_small_network_learns_an_easy_pattern_and_its_export_spots_live(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    region = REGION_NAMES.index("lip_corner_r")

    def video(person: str, seed: int) -> SpotSequence:
        raw = _raw(1500, np.random.default_rng(seed))
        truth: list[dict[str, object]] = []
        for start in range(60, 1400, 90):
            raw = _bump(raw, start, region, size=0.04)
            truth.append({"onset": start, "apex": start + 6, "offset": start + 11, "kind": "micro"})
        return _seq(raw, truth, "warp/calm@0.04#7", person=person)

    train = [video(f"p{k}", k) for k in range(4)]
    options = SpotTrainOptions(steps=150, width=8, batch=8, chunk=48, threads=1, seed=0)
    net = train_spotter(train, options)
    test = video("q", 99)
    logits = predict_logits(net, test, options.context)
    card = card_for(net, options, name="test")
    tp, fp, fn = match_counts(windows_of(test, logits, card), test.truth)
    assert tp >= 0.7 * len(test.truth) and fp <= 2
    path = export_spotter(net, card, tmp_path / "spotter.onnx")
    model = SpottingModel(path)
    assert model.card.name == "test" and (tmp_path / "spotter.card.json").is_file()
    x = np.ascontiguousarray(test.values[:model.card.window + 4].transpose(1, 2, 0)[None])
    assert np.allclose(model.logits(x)[0], logits[:, model.card.context:model.card.context + 5], atol=1e-4)
    # the live spotter over the same motion finds the same windows as the batch decoding
    spotter = LearnedSpotter(model)
    assert test.raw is not None
    live = []
    for k, sample in enumerate(test.raw.samples()):
        live += spotter.update(sample, index=k, t=k / FPS)
    live += spotter.flush()
    batch = windows_of(test, logits, card)
    assert [(w.onset.frame, w.offset.frame) for w in live] == [(w.onset.frame, w.offset.frame) for w in batch]
    assert rng is not None


def test_the_command_line_chooses_the_spotter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines import spotting_model
    from mer_cli.live import build_parser
    from mer_cli.spotting import spotting_choice
    from mer_core.errors import UserError

    options = SpotTrainOptions(steps=1, width=4, batch=2, chunk=48, threads=1, seed=0)
    net = train_spotter([_seq(_raw(300, np.random.default_rng(1)), [], "warp/calm@0.04#7")], options)
    path = export_spotter(net, card_for(net, options, name="cli"), tmp_path / "spotter.onnx")
    parse = build_parser().parse_args
    monkeypatch.setattr(spotting_model, "DEFAULT_SPOTTING_MODEL", tmp_path / "none" / "spotter.onnx")
    assert spotting_choice(parse(["--demo"])) == ("rules", None)  # nothing bundled: the rules
    assert spotting_choice(parse(["--demo", "--spotter", "rules", "--spotting-model", str(path)])) == ("rules", None)
    mode, model = spotting_choice(parse(["--demo", "--spotting-model", str(tmp_path)]))  # a folder will do
    assert mode == "learned" and model is not None and model.card.name == "cli"
    with pytest.raises(UserError, match="none is bundled"):
        spotting_choice(parse(["--demo", "--spotter", "learned"]))
    with pytest.raises(UserError, match="spotting model not found"):
        spotting_choice(parse(["--demo", "--spotting-model", str(tmp_path / "other.onnx")]))
    monkeypatch.setattr(spotting_model, "DEFAULT_SPOTTING_MODEL", path)  # bundled: used by default
    assert spotting_choice(parse(["--demo"]))[0] == "learned"
