"""One reading of a model name: ``ModelRef.parse`` (syntax) and ``.kind`` (what it is, from this machine only),
and one set of messages for a name that is nothing, whichever entry point was given it."""

from __future__ import annotations

import pytest

from trusttrace.core.errors import ModelError, ModelNotFoundError, OptionError, UnknownNameError
from trusttrace.models.assets import BUILTIN_MODELS
from trusttrace.models.checkpoints import CheckpointSeries
from trusttrace.models.files import resolve_source
from trusttrace.models.ref import ModelRef
from trusttrace.steer.proxy import checkpoint_ref
from trusttrace.training.finetune import FinetuneConfig


def test_parse_reads_model_at_revision_and_agrees_with_a_revision_option(tmp_path):
    assert ModelRef.parse("LLM360/Amber@ckpt_179").pair == ("LLM360/Amber", "ckpt_179")
    assert ModelRef.parse("LLM360/Amber", "ckpt_179") == ModelRef("LLM360/Amber", "ckpt_179")
    assert ModelRef.parse("LLM360/Amber@ckpt_179", "ckpt_179").revision == "ckpt_179"
    with pytest.raises(OptionError, match="names revision 'a' but --revision says 'b'"):
        ModelRef.parse("m/x@a", "b")
    with pytest.raises(OptionError, match="--source 'm@' is neither an existing path nor MODEL@REVISION"):
        ModelRef.parse("m@", option="--source")
    odd = tmp_path / "run@2"  # an existing path is never split at its @
    odd.mkdir()
    assert ModelRef.parse(str(odd)).pair == (str(odd), None)
    assert str(ModelRef.parse("a/b@main")) == "a/b@main"


def test_kind_tells_every_kind_of_model_apart(tmp_path):
    checkpoint = tmp_path / "series" / "step10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    kinds = {name: ModelRef(name).kind for name in (next(iter(BUILTIN_MODELS)), str(gguf), str(checkpoint),
                                                    str(tmp_path / "series"), "EleutherAI/pythia-70m")}
    assert list(kinds.values()) == ["builtin", "gguf", "checkpoint", "series", "hub"]
    assert [ModelRef(n).single for n in kinds] == [True, True, True, False, False]


def test_a_name_that_is_nothing_is_refused_alike_wherever_it_is_given(tmp_path):
    missing = str(tmp_path / "no-such-run")
    ref = ModelRef.parse(missing)  # parsing alone reads no disk: a config checks the syntax when it is made
    with pytest.raises(ModelNotFoundError) as first:
        _ = ref.kind
    assert "no such folder or file" in str(first.value) and "a hub id such as" in str(first.value)
    for entry in (lambda: CheckpointSeries.resolve(missing), lambda: resolve_source(missing, None, None, False),
                  lambda: checkpoint_ref(missing, "final"),
                  lambda: FinetuneConfig(model=missing, out=str(tmp_path / "chat"))):
        with pytest.raises(ModelNotFoundError) as again:
            entry()
        assert str(again.value) == str(first.value)


def test_a_file_that_is_no_gguf_and_a_near_builtin_name_are_refused_with_the_fix(tmp_path):
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(ModelError, match="is a file but not a .gguf one"):
        _ = ModelRef(str(text)).kind
    builtin = next(iter(BUILTIN_MODELS))
    with pytest.raises(UnknownNameError, match=f"did you mean {builtin!r}"):
        _ = ModelRef(builtin[:-2]).kind
    with pytest.raises(UnknownNameError, match="hub id"):
        _ = ModelRef("zzzzzz").kind


def test_a_name_no_file_system_accepts_is_refused_not_a_traceback():
    with pytest.raises(ModelNotFoundError, match="no such folder or file"):
        _ = ModelRef("~no-such-user-trusttrace/model").kind  # expanding ~user of no user raises in pathlib
