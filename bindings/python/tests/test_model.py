"""Model: loading, errors with status and message, info, tokenize, closing
and lifetime relative to contexts."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from conftest import FAST, fixtures_dir

import diffuse


def test_load_and_info(model: diffuse.Model, model_path: str) -> None:
    info = model.info
    assert info["family"] == "sd1"
    assert info["native_size"] == (64, 64)
    assert info["unet_in_channels"] == 4 and not info["inpainting"]
    assert info["path"] == model_path
    assert info["unet_parameters"] > 0 and info["weight_bytes"] > 0
    info["family"] = "changed"  # a copy: the model's own stays
    assert model.info["family"] == "sd1"
    assert "sd1" in repr(model)


def test_bad_path_raises_not_found_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(diffuse.NotFoundError) as err:
        diffuse.Model(missing)
    e = err.value
    assert e.status == diffuse.Status.NOT_FOUND
    assert isinstance(e, diffuse.DiffuseError) and isinstance(e, FileNotFoundError)
    assert str(missing) in e.message and str(missing) in str(e)
    assert "NOT_FOUND" in str(e)


def test_folder_without_model_index_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(diffuse.DiffuseError) as err:
        diffuse.Model(tmp_path)
    assert err.value.status == diffuse.Status.NOT_FOUND
    assert "model_index.json" in err.value.message


def test_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(diffuse.ModelError) as err:
        diffuse.Model(ckpt)
    assert err.value.status == diffuse.Status.MODEL_UNSAFE


def test_log_callback_receives_load_messages(model_path: str) -> None:
    seen = []
    with diffuse.Model(model_path, log=lambda lv, msg: seen.append((lv, msg)), log_level="debug"):
        pass
    assert seen and all(isinstance(lv, diffuse.LogLevel) for lv, _ in seen)
    assert any(model_path in msg for _, msg in seen)


def test_exception_in_log_callback_is_raised_by_the_load(model_path: str) -> None:
    def log(level: diffuse.LogLevel, message: str) -> None:
        raise KeyError("from the log callback")

    with pytest.raises(KeyError, match="from the log callback"):
        diffuse.Model(model_path, log=log, log_level="debug")


def test_tokenize(model: diffuse.Model) -> None:
    vocab = json.loads((fixtures_dir() / "models" / "tiny-sd1" / "tokenizer" / "vocab.json").read_text())
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    assert model.tokenize("a cat") == [bos, vocab["a</w>"], vocab["cat</w>"], eos]
    assert model.tokenize("") == [bos, eos]
    long = model.tokenize("cat " * 300)  # longer than the buffer first tried
    assert len(long) == 302 and long[1:-1] == [vocab["cat</w>"]] * 300
    with pytest.raises(ValueError):
        model.tokenize("a\0b")
    with pytest.raises(TypeError):
        model.tokenize(b"bytes")  # type: ignore[arg-type]


def test_closed_model_raises(model_path: str) -> None:
    m = diffuse.Model(model_path)
    m.close()
    m.close()  # idempotent
    assert m.closed
    with pytest.raises(diffuse.ClosedError) as err:
        m.tokenize("a cat")
    assert err.value.status == diffuse.Status.INVALID_ARGUMENT
    with pytest.raises(diffuse.ClosedError):
        m.info
    with pytest.raises(diffuse.ClosedError):
        diffuse.Context(m)
    with pytest.raises(diffuse.ClosedError):
        with m:
            pass


def test_context_manager_closes(model_path: str) -> None:
    with diffuse.Model(model_path) as m:
        assert not m.closed
    assert m.closed


def test_model_outlives_its_closing_while_contexts_are_open(model_path: str) -> None:
    m = diffuse.Model(model_path)
    c = diffuse.Context(m)
    m.close()  # deferred: c still uses the weights
    assert m.closed and m._handle is not None
    (img,) = c.generate("still works", **FAST)
    assert img.size == (32, 32)
    c.close()
    assert m._handle is None  # freed with the last context


def test_context_keeps_an_unreferenced_model_alive(model_path: str) -> None:
    c = diffuse.Context(diffuse.Model(model_path))
    gc.collect()
    (img,) = c.generate("orphan", **FAST)
    assert img.size == (32, 32)
    c.close()


def test_dropping_everything_frees_without_crashing(model_path: str) -> None:
    m = diffuse.Model(model_path)
    contexts = [diffuse.Context(m, threads=1) for _ in range(3)]
    del m
    contexts[0].generate("x", **FAST)
    del contexts
    gc.collect()
