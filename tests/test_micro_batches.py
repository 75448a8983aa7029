"""CPU micro-batches (ModelBase.cpu_micro_batch_windows): same numbers as one whole batch, hooks see every clip."""

from __future__ import annotations

import pytest
import torch

from rl_core import ProbeConfig, build_model, build_probe_from_config_online, get_model_class, list_model_classes

FAMILIES = [name for name in list_model_classes(builtin=True) if get_model_class(name).cpu_micro_batch_windows]


@pytest.fixture(scope="module", params=FAMILIES)
def model_and_clips(request):
    """Five clips of half a model window."""
    torch.manual_seed(0)
    model = build_model(request.param, device="cpu", return_features_only=True).eval()
    clips = 0.1 * torch.randn(5, model.window_samples // 2, generator=torch.Generator().manual_seed(1))
    return model, clips


def _calls_of_last_layer(model, run) -> int:
    calls = []
    handle = list(model.layer_modules().values())[-1].register_forward_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


def test_micro_batches_equal_one_whole_batch(model_and_clips, monkeypatch):
    model, clips = model_and_clips
    assert type(model).cpu_micro_batch_windows == 2
    with torch.inference_mode():
        calls = _calls_of_last_layer(model, lambda: model(clips))
        split = model(clips)
        monkeypatch.setattr(type(model), "cpu_micro_batch_windows", None)
        whole_calls = _calls_of_last_layer(model, lambda: model(clips))
        whole = model(clips)
    # 5 half-window clips -> 4 + 1; EAT pads each clip to a whole window -> 2 + 2 + 1
    assert (calls, whole_calls) == ((3 if model.name == "eat" else 2), 1)
    assert split.shape == whole.shape and split.shape[0] == 5
    assert torch.allclose(split, whole, atol=1e-4), (split - whole).abs().max()


def test_layer_embeddings_collect_every_micro_batch(model_and_clips):
    model, clips = model_and_clips
    together = model.extract_embeddings(clips, layers=[0, -1], aggregation="mean")
    one_by_one = torch.cat([model.extract_embeddings(clips[i:i + 1], layers=[0, -1], aggregation="mean")
                            for i in range(len(clips))])
    assert together.shape == (5, 2 * model.get_embedding_dim())
    assert torch.allclose(together, one_by_one, atol=1e-4), (together - one_by_one).abs().max()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_online_probe_on_layers_sees_the_whole_batch(model_and_clips):
    model, clips = model_and_clips
    first, last = model.list_layers()[0], model.list_layers()[-1]
    probe = build_probe_from_config_online(
        ProbeConfig(probe_type="linear", target_layers=[first, last], aggregation="mean",
                    target_length=clips.shape[1]), base_model=model, num_classes=3, device="cpu")
    probe.eval()
    with torch.no_grad():
        logits = probe(clips)
        one_by_one = torch.cat([probe(clips[i:i + 1]) for i in range(len(clips))])
    assert logits.shape == (5, 3)
    assert torch.allclose(logits, one_by_one, atol=1e-4), (logits - one_by_one).abs().max()


def test_short_clips_are_not_split_unless_the_model_pads_them(model_and_clips):
    model, _ = model_and_clips
    short = 0.1 * torch.randn(8, model.window_samples // 10)
    with torch.inference_mode():
        calls = _calls_of_last_layer(model, lambda: model(short))
    # 8 tenth-windows fit in two windows; EAT pads every clip to a whole window, so it runs them two by two
    assert calls == (4 if model.name == "eat" else 1)
