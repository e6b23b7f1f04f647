
import pytest
import torch

from trusttrace.models.blocks import BLOCK_PATHS, find_blocks
from trusttrace.models.devices import choose_dtype
from trusttrace.models.loading import load_model


@pytest.mark.parametrize("arch,n_layers", [("llama", 3), ("gpt_neox", 3), ("gpt2", 3)])
def test_loads_local_folder_with_blocks(tiny_models, arch, n_layers):
    lm = load_model(str(tiny_models[arch]), dtype="float32")
    assert lm.info.architecture == arch
    assert lm.info.n_layers == n_layers == len(lm.blocks)
    assert lm.info.source == "local" and lm.info.dtype == "float32"
    assert not lm.model.training


def test_fallback_search_finds_unlisted_architecture(tiny_models, monkeypatch):
    monkeypatch.delitem(BLOCK_PATHS, "gpt2")
    lm = load_model(str(tiny_models["gpt2"]), dtype="float32")
    blocks, path = find_blocks(lm.model)
    assert path == "transformer.h" and len(blocks) == 3


def test_unknown_blocks_path_says_how_to_name_them(tiny_models):
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    with pytest.raises(ValueError, match="does not name an nn.ModuleList"):
        find_blocks(lm.model, "model.nothing")


def test_pickle_only_folder_is_refused(tiny_models, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_models["llama"].iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="allow_pickle"):
        load_model(str(folder))


def test_missing_model_names_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match="built-in name"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_dtype_choice():
    cpu = torch.device("cpu")
    assert choose_dtype("float32", cpu) == (torch.float32, "asked for")
    dtype, reason = choose_dtype("auto", cpu)
    assert dtype in (torch.bfloat16, torch.float32) and reason.startswith("auto")
    with pytest.raises(ValueError, match="not one of"):
        choose_dtype("int4", cpu)
