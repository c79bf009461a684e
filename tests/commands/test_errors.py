"""One family of errors (``talkingface.errors``) and the one handler that turns them into the command line's
``error: <file or flag>: <problem>`` line and exit status (``talkingface.cli_support.command``)."""

from __future__ import annotations

import errno
import importlib
import inspect
import pickle
import pkgutil

import pytest

import talkingface
from talkingface.cli_support import ArgumentParser, command
from talkingface.commands import main as cli
from talkingface.errors import TalkingFaceError


def _package_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of the package (``__main__`` entry points are not imported)."""
    found = []
    for info in pkgutil.walk_packages(talkingface.__path__, "talkingface."):
        if info.name.rpartition(".")[2] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.append(obj)
    return found


def test_every_exception_of_the_package_is_a_talkingface_error() -> None:
    classes = _package_exceptions()
    names = {c.__name__ for c in classes}
    assert {"ConfigError", "CheckpointError", "InferenceError", "PreprocessError", "UploadError"} <= names, names
    assert len(classes) >= 18, names  # the walk reached every package
    # an interrupt (SIGTERM taking Ctrl-C's way out, cli_support.Terminated) is no error to act on
    errors = [c for c in classes if not issubclass(c, KeyboardInterrupt)]
    outside = sorted(f"{c.__module__}.{c.__name__}" for c in errors if not issubclass(c, TalkingFaceError))
    assert not outside, f"not a TalkingFaceError: {outside}"


def test_the_error_says_where_what_and_the_next_step() -> None:
    err = TalkingFaceError("in.mp4", "no face in 40 of 50 frames", hint="pass --face x,y")
    assert (err.where, err.problem, err.hint) == ("in.mp4", "no face in 40 of 50 frames", "pass --face x,y")
    assert str(err) == "in.mp4: no face in 40 of 50 frames; pass --face x,y"  # every reader gets the next step
    assert str(TalkingFaceError("in.mp4", "no face")) == "in.mp4: no face"
    assert err.cli_line() == "error: in.mp4: no face in 40 of 50 frames; pass --face x,y"
    older = TalkingFaceError("a.yaml: invalid YAML:\n  line 3")  # one argument: the message names its file itself
    assert older.where is None and str(older) == "a.yaml: invalid YAML:\n  line 3"
    assert older.cli_line() == "error: a.yaml: invalid YAML: line 3"


def test_the_old_bases_attributes_and_pickling_are_kept() -> None:
    from talkingface.app.limits import UploadError
    from talkingface.evaluate.errors import MissingWeightsError
    from talkingface.inference.errors import InferenceError
    from talkingface.media.errors import PreprocessError
    from talkingface.model.image_driven_talkingface.DiffTalk import CheckpointError, ConfigError
    from talkingface.model.image_driven_talkingface.DiffTalk.samplers import SamplerError
    from talkingface.training.checkpoint_io import CheckpointWriteError

    assert issubclass(ConfigError, ValueError) and issubclass(CheckpointError, RuntimeError)
    assert issubclass(CheckpointWriteError, OSError) and CheckpointWriteError.exit_status == 1
    sampler = SamplerError("steps", "DDIM takes 1..500 steps, got 0")
    assert sampler.option == "steps" and str(sampler) == "DDIM takes 1..500 steps, got 0"
    upload = UploadError(413, "video", "too large")
    assert upload.status == 413 and str(upload) == "video: too large"
    missing = MissingWeightsError("fid", "--fid-features", "an Inception network")
    assert missing.where == "--fid-features" and "pass it with --fid-features PATH" in missing.cli_line()
    written = CheckpointWriteError(errno.ENOSPC, "last.ckpt: cannot write")
    assert written.errno == errno.ENOSPC and str(written) == "last.ckpt: cannot write"
    for err in (PreprocessError("a.mp4", "bad"), InferenceError("b.wav", "short"), upload, missing, sampler, written):
        back = pickle.loads(pickle.dumps(err))  # errors of worker processes reach the parent
        assert type(back) is type(err) and str(back) == str(err) and back.cli_line() == err.cli_line()
    hinted = pickle.loads(pickle.dumps(PreprocessError("a.mp4", "bad", hint="use another")))
    assert hinted.hint == "use another"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_one_handler_for_every_subcommand(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TalkingFaceError raised inside any subcommand (here by its argument parser) is one line and exit 2."""

    def raising(self: ArgumentParser, *args: object, **kwargs: object) -> None:
        raise TalkingFaceError("some.yaml", "a problem\nover two lines", hint="the next step")

    monkeypatch.setattr(ArgumentParser, "parse_known_args", raising)
    assert cli.main([name]) == 2
    assert capsys.readouterr().err == "error: some.yaml: a problem over two lines; the next step\n"


def test_the_handler_for_os_errors_and_ctrl_c(capsys: pytest.CaptureFixture[str]) -> None:
    raised: list[BaseException] = []

    @command(disk_full_hint="free space")
    def main() -> int:
        raise raised[-1]

    cases = [
        (OSError(errno.ENOSPC, "disk full", "out/1.jpg"), 1, "error: out/1.jpg: disk full; free space"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "in.mp4"), 2, "error: in.mp4: No such file"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (TalkingFaceError(None, "plain"), 2, "error: plain"),
    ]
    for err, status, line in cases:
        raised.append(err)
        assert main() == status
        assert capsys.readouterr().err.startswith(line)
    raised.append(ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main()
    assert command(lambda: 0)() == 0 and command(lambda: None)() == 0
