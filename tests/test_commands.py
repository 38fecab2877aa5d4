"""The commands' edges: --help texts, checks made before anything slow loads, torch as an optional extra,
MediaPipe's native log lines kept out of the output, and a relative $MER_FACE_MODEL."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from in_process import run_main

from engines.backends.base import TRAIN_EXTRA

REPO = Path(__file__).resolve().parents[1]


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


# --- mer-synth ------------------------------------------------------------------------------------------


@pytest.fixture
def faces_must_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading faces (the slow start of mer-synth) fails the test with a recognisable error."""
    import mer_cli.synth

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("faces were loaded")

    monkeypatch.setattr(mer_cli.synth, "load_identities", refuse)


@pytest.mark.usefixtures("faces_must_not_load")
def test_mer_synth_checks_out_before_loading_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.synth import main

    (tmp_path / "recognition").mkdir()
    (tmp_path / "recognition" / "annotations.csv").write_text("old\n")
    assert main(["--out", str(tmp_path)]) == 2
    message = _one_line(capsys.readouterr().err)
    assert str(tmp_path / "recognition") in message and "--force" in message
    assert main(["--out", str(tmp_path), "--set", "recognition"]) == 2
    (tmp_path / "spotting").write_text("a file where a folder belongs")
    assert main(["--out", str(tmp_path), "--set", "spotting", "--force"]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "spotting").unlink()
    # allowed: --force, another set, an empty folder; each then goes on to load the faces
    for args in (["--force"], ["--set", "spotting"]):
        with pytest.raises(AssertionError, match="faces were loaded"):
            main(["--out", str(tmp_path), *args])
    (tmp_path / "empty" / "recognition").mkdir(parents=True)
    with pytest.raises(AssertionError, match="faces were loaded"):
        main(["--out", str(tmp_path / "empty")])


def test_mer_synth_help_shows_defaults_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.synth import build_parser, main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for typed in ("0.03,0.08", "0.10,0.22", "640x360", "4-8", "1-2"):
        assert f"(default: {typed})" in text, typed
    assert "(0.03, 0.08)" not in text and "(640, 360)" not in text
    assert "(default: None)" not in text and "(default: False)" not in text
    args = build_parser().parse_args(["--out", "x"])  # the typed defaults still parse to the values
    assert args.micro_amplitude == (0.03, 0.08) and args.macro_amplitude == (0.10, 0.22)
    assert args.video_size == (640, 360) and args.mes_per_video == (4, 8) and args.macros_per_video == (1, 2)


def test_mer_synth_keeps_mediapipe_log_lines_out_of_its_output(
    face_model_path: Path, shared_faces: Path, tmp_path: Path
) -> None:
    args = ["--out", str(tmp_path / "out"), "--set", "recognition", "--subjects", "1", "--clips-per-class", "1",
            "--face-model", str(face_model_path), "--shared-faces", str(shared_faces)]
    proc = subprocess.run([sys.executable, "-m", "mer_cli.synth", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    for native in ("face_landmarker_graph", "XNNPACK", "InitGoogle", "W0000"):
        assert native not in output, output
    assert "1 subjects" in output and "recognition" in output  # its own messages still show


def test_a_relative_mer_face_model_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mer_cli.synth import _face_model
    from mer_cli.train import _resolve_alignment

    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path / "models")
    monkeypatch.setenv("MER_FACE_MODEL", "../shared/face_landmarker.task")
    expected = tmp_path / "shared" / "face_landmarker.task"
    assert _face_model(None) == expected
    args = argparse.Namespace(face_model=None, alignment="auto", dataset="casme2")
    assert _resolve_alignment(args) == ("onset", str(expected))


def test_native_lines_are_hidden_while_python_messages_still_show() -> None:
    """What the commands wrap MediaPipe in: writes straight to fd 2 vanish, Python's stderr does not."""
    script = """if True:
        import logging, os, sys
        from realtime.native_stderr import StderrHandler, native_stderr_silenced
        logging.getLogger().addHandler(StderrHandler())
        with native_stderr_silenced(True, keep_python=True):
            os.write(2, b"W0000 native glog line\\n")
            print("python line", file=sys.stderr)
            logging.getLogger("x").warning("logged line")
        os.write(2, b"native after\\n")
        with native_stderr_silenced(False, keep_python=True):
            os.write(2, b"native when verbose\\n")
    """
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["python line", "logged line", "native after", "native when verbose"]


# --- mer-train ------------------------------------------------------------------------------------------


def test_mer_train_help_explains_every_option_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.train import _merge_parser, _train_parser, main

    for parser in (_train_parser(), _merge_parser()):
        for action in [*_options(parser), *(a for a in parser._actions if not a.option_strings)]:
            assert action.help, action.option_strings or action.dest
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--epochs N training epochs per fold (default: 40)", "(default: 32)", "(default: 0.001)",
                  "(default: 0.0001)", "(default: loso)", "(default: dual-phase)", "(default: 5)"):
        assert shown in text, shown
    final = text.split("--final", 2)[2]  # the option's own help (the first hit is in the usage line)
    assert "the model to use" in final.split("training:")[0] and "mer-live --model" in final
    assert "--final to also get the model to use" in text  # the description says so too


def test_mer_train_without_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.train import main

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    assert main(["--data", str(tmp_path), "--dataset", "synth", "--out", str(tmp_path / "run")]) == 2
    message = _one_line(capsys.readouterr().err)
    assert message.startswith("mer-train: error:") and TRAIN_EXTRA in message
    assert main(["merge", str(tmp_path)]) == 2  # pooling results needs no torch: its own error, not torch's
    message = _one_line(capsys.readouterr().err)
    assert "no fold results" in message and "torch" not in message


# --- mer-export, mer-bench, mer-live ----------------------------------------------------------------------


def test_mer_export_without_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.export import main

    monkeypatch.setitem(sys.modules, "torch", None)
    assert main([str(tmp_path / "model.pt"), "--onnx", str(tmp_path / "model.onnx")]) == 2
    message = _one_line(capsys.readouterr().err)
    assert message.startswith("mer-export: error:") and TRAIN_EXTRA in message


def test_mer_bench_help_says_what_it_does_once_without_markup() -> None:
    from mer_cli.bench import build_parser

    text = build_parser().format_help()
    assert "``" not in text
    assert text.count("show the figures next to the project's targets") == 1
    assert "Measure the real pipeline" in text and "classification latency per available engine" in text


def _fake_measurements(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """mer-bench's measurements replaced by fixed figures in no time: one event, no paced-run latency, no
    ONNX Runtime, no annotations' spotting score."""
    import mer_cli.bench
    from mer_core.events import StatusRecord
    from mer_offline.bench import RunFigures

    class Engine:
        name, reason = "fake", "test stand-in"

        class card:  # noqa: N801 - the attribute the command reads
            crop_size = 128

        def close(self) -> None:
            pass

    def synthetic_video(*, seconds: float, fps: float, face_model: object = None,
                        progress: Any = None) -> tuple[Path, Path]:
        for done in (0, 450, 900):
            if progress is not None:
                progress(done, 900)
        return tmp_path / "clip.mp4", tmp_path / "annotations.csv"

    def run_pipeline(video: Path, *, on_status: Any = None, **kwargs: Any) -> RunFigures:
        if on_status is not None:
            on_status(StatusRecord(frames=450, dropped=0, fps_in=30.0, fps_proc=61.0, face=True, face_frames=450))
        stage: dict[str, float | None] = {"p50": 1.5, "p95": 2.5}
        return RunFigures(frames=900, wall_s=9.0, fps=100.0, events={"micro": 1, "macro": 0},
                          stage_ms={s: stage for s in ("decode", "face", "classify")},
                          latency_ms={"p50": 12.0, "p95": 20.0}, delay_ms={"p50": None, "p95": None}, spotting=None)

    def engine_latency(model: object, *, unavailable: dict[str, str] | None = None,
                       progress: Any = None) -> dict[str, dict[str, float]]:
        if unavailable is not None:
            unavailable["onnxruntime"] = "not installed"
        return {"torch b1": {"p50": 3.0, "p95": 4.0}}

    monkeypatch.setattr(mer_cli.bench, "synthetic_video", synthetic_video)
    monkeypatch.setattr(mer_cli.bench, "load_engine", lambda model, backend: Engine())
    monkeypatch.setattr(mer_cli.bench, "landmarker_baseline", lambda video, face_model=None: {
        "frames": 900, "wall_s": 8.0, "fps": 112.5, "landmark_ms": {"p50": 8.0, "p95": 9.5}})
    monkeypatch.setattr(mer_cli.bench, "run_pipeline", run_pipeline)
    monkeypatch.setattr(mer_cli.bench, "engine_latency", engine_latency)
    monkeypatch.setenv("COLUMNS", "200")  # the tables on one line each


def test_mer_bench_says_what_it_skipped_and_prints_no_python_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Skipped measurements showed as "None", the footer as raw dicts (events {'micro': 1, 'macro': 0})."""
    from mer_cli.bench import main

    _fake_measurements(monkeypatch, tmp_path)
    assert main(["--skip-startup", "--paced-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "{" not in out and "[" not in out, out
    assert "events: 1 micro, 0 macro" in out and "latency p50 12 ms, p95 20 ms" in out
    assert "skipped (--skip-startup)" in out and "paced: skipped (--paced-seconds 0)" in out
    assert "skipped (onnxruntime not available: not installed)" in out
    assert "engines: torch b1 p50 3 ms, p95 4 ms" in out


def test_mer_bench_says_what_it_is_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A minute of measuring went by with nothing on screen (or only a spinner): a line per step, how far."""
    import mer_cli.progress
    from mer_cli.bench import main

    _fake_measurements(monkeypatch, tmp_path)
    monkeypatch.setattr(mer_cli.progress, "PLAIN_EVERY_S", 0.0)  # every note, not one per few seconds
    assert main(["--skip-startup", "--paced-seconds", "2", "--json"]) == 0
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if line.endswith(" ...")]
    assert steps == ["mer-bench: [1/7] generating a synthetic video ...", "mer-bench: [2/7] loading the model ...",
                     "mer-bench: [3/7] bare MediaPipe landmarker ...", "mer-bench: [4/7] offline run 1 (--fast) ...",
                     "mer-bench: [5/7] bare MediaPipe landmarker ...",
                     "mer-bench: [6/7] paced run (2 s at the video's frame rate) ...",
                     "mer-bench: [7/7] classification latency per engine ..."], err
    assert "mer-bench: [1/7] generating a synthetic video: 450/900 frames" in err
    assert "mer-bench: [4/7] offline run 1 (--fast): 450 frames, 61 fps" in err


def test_mer_live_usage_shows_the_keys_form() -> None:
    from mer_cli.live import main

    proc = run_main(main, ["--help"])
    assert proc.returncode == 0
    usage = proc.stdout.split("\n\n")[0]
    assert usage.startswith("usage: mer-live [-h]") and "mer-live keys KEYDIR" in usage
    keys = run_main(main, ["keys", str(Path(os.devnull) / "x")])
    assert keys.returncode == 2 and "Traceback" not in keys.stderr  # the form itself still parses


def test_mer_live_landmark_every_takes_a_number_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.live import build_parser

    parser = build_parser()
    assert parser.parse_args(["--demo", "--landmark-every", "auto"]).landmark_every == "auto"
    assert parser.parse_args(["--demo", "--landmark-every", "3"]).landmark_every == 3
    for bad in ("0", "often"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--demo", "--landmark-every", bad])
        assert exit_info.value.code == 2
        assert "whole number >= 1 or 'auto'" in capsys.readouterr().err


def test_every_spotting_option_reaches_the_spotter() -> None:
    from mer_analysis.spotting import SpotterOptions
    from mer_cli.live import build_parser
    from mer_cli.spotting import spotter_options

    args = build_parser().parse_args(["--demo", "--micro-max", "0.4", "--min-duration", "0.1", "--threshold", "3",
                                      "--min-peak", "0.01", "--max-context", "0.8"])
    s = spotter_options(args)
    assert (s.micro_max_s, s.min_duration_s, s.threshold, s.min_peak, s.max_context) == (0.4, 0.1, 3.0, 0.01, 0.8)
    assert spotter_options(build_parser().parse_args(["--demo"])) == SpotterOptions()  # not given: defaults


@pytest.mark.parametrize("option, value, says", [
    ("--threshold", "-1", "must be a number > 0"),
    ("--threshold", "0", "must be a number > 0"),
    ("--min-peak", "abc", "must be a number, got 'abc'"),
    ("--min-duration", "-0.1", "must be a number >= 0"),
    ("--micro-max", "inf", "must be a finite number"),
    ("--max-context", "nan", "must be a finite number"),
])
def test_a_bad_spotting_value_is_a_usage_error(option: str, value: str, says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.analyze import build_parser as analyze_parser
    from mer_cli.live import build_parser as live_parser

    for parser, first in ((live_parser(), ["--demo"]), (analyze_parser(), ["x.mp4", "--out", "o"])):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*first, option, value])
        assert exit_info.value.code == 2
        assert f"argument {option}: {says}" in capsys.readouterr().err


@pytest.mark.parametrize("module, argv, says", [
    ("mer_cli.live", ["--demo", "--duration", "-1"], "argument --duration: must be a number > 0"),
    ("mer_cli.live", ["--demo", "--duration", "nan"], "argument --duration: must be a finite number"),
    ("mer_cli.bench", ["--repeats", "0"], "argument --repeats: must be a whole number >= 1"),
    ("mer_cli.bench", ["--paced-fps", "0"], "argument --paced-fps: must be a number > 0"),
    ("mer_cli.bench", ["--seconds", "-5"], "argument --seconds: must be a number > 0"),
    ("mer_cli.realbench", ["--folds", "-1"], "argument --folds: must be a whole number >= 0"),
    ("mer_cli.train_spot", ["--out", "o", "--steps", "0"], "argument --steps: must be a whole number >= 1"),
    ("mer_cli.train", ["--data", "d", "--out", "o", "--threads", "0"], "argument --threads: must be a whole number >= 1"),
    ("mer_cli.train", ["--data", "d", "--out", "o", "--target-fps", "-1"], "argument --target-fps: must be a number > 0"),
    ("mer_cli.subscribe", ["--count", "-1"], "argument --count: must be a whole number >= 1"),
    ("mer_cli.subscribe", ["--timeout", "0"], "argument --timeout: must be a number > 0"),
])
def test_a_number_out_of_range_is_a_usage_error(module: str, argv: list[str], says: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range numbers stop at the command line (exit 2, one line), before a camera, model or run folder is
    touched: --duration -1 used to run one frame and exit 0, --repeats 0 and --threads 0 to run on, --target-fps -1 was a traceback."""
    import importlib

    cli = importlib.import_module(module)
    name = {"mer_cli.train": "_train_parser"}.get(module, "build_parser")
    parser = getattr(cli, name)()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_spotting_values_refused_together_name_the_option() -> None:
    """--min-peak above the largest movement the spotter takes: one line naming the option, not a traceback."""
    from mer_cli.live import build_parser
    from mer_cli.spotting import spotter_options
    from mer_core.errors import UserError

    with pytest.raises(UserError) as info:
        spotter_options(build_parser().parse_args(["--demo", "--min-peak", "0.1"]))
    assert str(info.value) == ("bad spotting option: --min-peak (0.1) must be below max_peak (0.08), the largest "
                               "movement spotted")


def test_an_unknown_setting_is_refused_by_name() -> None:
    from mer_analysis.spotting import SpotterOptions
    from mer_core.options import OptionsError, replace_options

    assert replace_options(SpotterOptions(), threshold=3.0).threshold == 3.0
    with pytest.raises(OptionsError) as info:
        replace_options(SpotterOptions(), thresold=3.0)
    assert str(info.value).startswith("SpotterOptions has no setting 'thresold'; known: ")
    assert "threshold" in str(info.value) and "\n" not in str(info.value)


def test_every_console_script_points_at_a_function() -> None:
    """pyproject's [project.scripts] entries import and name a callable (a moved module breaks them silently)."""
    import importlib
    import tomllib

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {"mer-live", "mer-analyze", "mer-bench", "mer-train", "mer-synth", "mer-export", "mer-subscribe"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr, None)), f"{name} = {target}"


def test_record_never_replaces_an_input_or_a_file_that_is_not_a_recording(tmp_path: Path) -> None:
    """--record replaces its file: `--record clip.mp4` for `--video clip.mp4` used to destroy the video."""
    from mer_cli.live_run import check_record_path
    from mer_core.errors import UserError

    video, notes, earlier = tmp_path / "clip.mp4", tmp_path / "notes.txt", tmp_path / "run.jsonl"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    notes.write_text("my notes\n")
    earlier.write_text('{"schema":"mer/1","type":"status","seq":0}\n')
    with pytest.raises(UserError, match="is one of this run's inputs"):
        check_record_path(video, [str(video), None])
    with pytest.raises(UserError, match="exists and is not a mer-live recording"):
        check_record_path(notes, [str(video)])
    check_record_path(earlier, [str(video)])  # an earlier recording is replaced, as documented
    check_record_path(tmp_path / "new.jsonl", [str(video)])
    check_record_path(None, [str(video)])
    (tmp_path / "empty.jsonl").write_text("")
    check_record_path(tmp_path / "empty.jsonl", [str(video)])
    assert video.read_bytes().startswith(b"\x00") and notes.read_text() == "my notes\n"


@pytest.mark.parametrize("insecure", [[], ["--insecure"]], ids=["", "insecure"])
@pytest.mark.parametrize("address, says", [
    ("999.1.1.1", "invalid address 999.1.1.1"),
    ("203.0.113.77", "203.0.113.77 is not an address of this machine"),  # TEST-NET-3: no machine's address
])
def test_mer_live_says_an_address_cannot_work_before_asking_for_keys(
    address: str, says: str, insecure: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--zmq tcp://999.1.1.1:5556` first said "reachable from other machines" (so, make keys), and only with
    --insecure that the address is not this machine's; one line either way, before anything loads."""
    import mer_cli.live_run
    from mer_cli.live import main

    def must_not_run(args: object, **kwargs: object) -> int:
        raise AssertionError("mer-live went on to open the source")

    monkeypatch.setattr("mer_cli.live.run_live", must_not_run)
    monkeypatch.setattr(mer_cli.live_run, "demo_video", must_not_run)
    for name in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL"):  # main() sets them for OpenCV
        monkeypatch.setenv(name, os.environ.get(name, "8"))
    assert main(["--demo", "--zmq", f"tcp://{address}:5556", *insecure]) == 2
    message = _one_line(capsys.readouterr().err)
    assert message.startswith("mer-live: error:") and says in message and "reachable" not in message


# --- mer-live --demo: the clip is made before the dashboard starts ---------------------------------------


def test_making_the_demo_clip_shows_progress(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The first `mer-live --demo` made its clip for 5-11 s with nothing on screen (the dashboard starts after):
    a progress line says what is happening (plain lines when stderr is not a terminal)."""
    import mer_cli.live_run
    from mer_cli.live import build_parser

    def fake_demo(face_model: object = None, progress: Any = None) -> Path:
        assert progress is not None, "no progress callback"
        for done in (0, 300, 600, 900):
            progress(done, 900)
        return Path("demo.mp4")

    monkeypatch.setattr(mer_cli.live_run, "demo_video", fake_demo)
    assert mer_cli.live_run._source_spec(build_parser().parse_args(["--demo"])) == "demo.mp4"
    err = capsys.readouterr().err
    assert "making the demo clip" in err and "900/900 frames" in err, err
    assert err.count("\n") <= 5  # a few lines, not one per frame


def test_an_existing_demo_clip_shows_no_progress(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import mer_cli.live_run
    from mer_cli.live import build_parser

    monkeypatch.setattr(mer_cli.live_run, "demo_video", lambda face_model=None, progress=None: Path("demo.mp4"))  # cached
    mer_cli.live_run._source_spec(build_parser().parse_args(["--demo"]))
    assert capsys.readouterr().err == ""


def test_the_demo_clip_reports_its_frames_as_it_is_made(face_model_path: Path, tmp_path: Path) -> None:
    from training.demo import synthetic_video

    calls: list[tuple[int, int]] = []
    synthetic_video(seconds=5.0, fps=30.0, seed=1, face_model=face_model_path, cache_dir=tmp_path,
                    progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 150) and calls[-1] == (150, 150)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    synthetic_video(seconds=5.0, fps=30.0, seed=1, face_model=face_model_path, cache_dir=tmp_path,
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # cached: nothing to make


def test_mer_bench_too_short_a_video_is_one_line(face_model_path: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--seconds 4 (the generator makes 5 s at least) was a SynthError traceback."""
    from mer_cli.bench import main

    assert main(["--seconds", "4", "--skip-startup"]) == 2
    step, *rest = capsys.readouterr().err.splitlines()
    assert step == "mer-bench: [1/7] generating a synthetic video ..."
    message = _one_line("\n".join(rest))
    assert message.startswith("mer-bench: error: cannot generate a 4 s video at 30 fps to measure on: "), message
    assert "video_seconds must be within 5..600" in message


def test_mer_bench_spotting_gives_no_figures_for_a_run_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipeline whose analysis failed publishes nothing more: scoring that read as F1 0, with no error."""
    import mer_cli.bench_spotting as bench_spotting
    from mer_offline.bench import RunFigures

    (tmp_path / "v001.mp4").write_bytes(b"")
    (tmp_path / "annotations.csv").write_text("video,onset,offset,kind\nv001,10,20,micro\n", encoding="utf-8")

    class Engine:
        card = None

        def close(self) -> None:
            pass

    monkeypatch.setattr(bench_spotting, "load_engine", lambda model: Engine())
    monkeypatch.setattr(bench_spotting, "run_pipeline", lambda video, **kwargs: RunFigures(
        frames=30, wall_s=1.0, fps=30.0, ended="error", error="NameError: boom"))
    assert bench_spotting.main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "the analysis of v001.mp4 failed (NameError: boom)" in captured.err
    assert "F1" not in captured.out
