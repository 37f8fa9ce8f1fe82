"""Progress events: stages by name, steps, messages; the sinks act on a stage's name, never on a message's text."""

import pytest

from codex_core.batch_summary import BatchProgress
from codex_core.progress import STAGES, Progress


def test_stages_steps_and_messages_reach_the_sink_as_events(capsys):
    events = []
    progress = Progress(enabled=True, sink=events.append)
    progress.stage("load")
    progress.message("decoding is a word in a message, not a stage")
    progress.stage("decode", "decoding latents")
    assert events == [{"type": "stage", "stage": "load", "text": None},
                      {"type": "message", "text": "decoding is a word in a message, not a stage"},
                      {"type": "stage", "stage": "decode", "text": "decoding latents"}]
    assert capsys.readouterr().err == ("codex: decoding is a word in a message, not a stage\n"
                                       "codex: decoding latents\n")  # a stage without text prints nothing
    assert STAGES == ("load", "encode", "denoise", "decode", "export")


def test_an_unknown_stage_is_a_bug_in_the_caller():
    with pytest.raises(ValueError, match="unknown progress stage 'decoding'; the stages: load, encode"):
        Progress(enabled=False).stage("decoding")


def test_the_batch_says_a_message_once_and_no_per_item_stage(capsys):
    bars = BatchProgress(total=2, done=0, enabled=True)
    for _ in range(2):
        bars.sink({"type": "stage", "stage": "load", "text": "loading x"})
        bars.sink({"type": "message", "text": "writing is only a word here"})
        bars.sink({"type": "stage", "stage": "export", "text": "writing png into y"})
    bars.close()
    err = capsys.readouterr().err
    assert err.count("codex: loading x") == 1 and err.count("codex: writing is only a word here") == 1
    assert "writing png into y" not in err
