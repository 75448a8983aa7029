"""precision="bfloat16" on the transformer families (EAT, Bird-MAE, AVES; BEATs in test_beats.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import rl_core
from rl_core.errors import ConfigError

FAMILIES = {  # registry key -> clip seconds (EAT and Bird-MAE pad every clip to their window anyway)
    "esp_aves2_eat_all": 1.0,
    "birdmae_base": 1.0,
    "birdaves_biox_base": 1.0,
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def float32_and_bfloat16(request):
    torch.manual_seed(0)
    reference = rl_core.build_model(request.param, device="cpu", num_classes=3).eval()
    fast = rl_core.build_model(request.param, device="cpu", num_classes=3, precision="bfloat16").eval()
    fast.load_state_dict(reference.state_dict())
    clips = 0.1 * torch.randn(2, int(FAMILIES[request.param] * reference.sample_rate),
                              generator=torch.Generator().manual_seed(1))
    return reference, fast, clips


def test_bfloat16_embeddings_are_close_to_float32(float32_and_bfloat16):
    reference, fast, clips = float32_and_bfloat16
    with torch.inference_mode():
        want, got = reference.embed_and_score(clips)[0], fast.embed_and_score(clips)[0]
        features = fast.forward_features(fast.prepare_input(clips))
    assert got.dtype == torch.float32 and features.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(want, got, dim=-1).min() > 0.999
    assert not torch.equal(want, got)  # it really ran in bf16


def test_bfloat16_stores_matmul_weights_in_bf16_and_keeps_the_head_float32(float32_and_bfloat16):
    _, fast, clips = float32_and_bfloat16
    dtypes = {p.dtype for name, p in fast.named_parameters() if not name.startswith("classifier.")}
    assert dtypes == {torch.float32, torch.bfloat16}  # norms stay float32
    assert fast.classifier.weight.dtype == torch.float32
    float32_bytes = sum(p.numel() * 4 for p in fast.parameters()) + sum(b.numel() * b.element_size()
                                                                         for b in fast.buffers())
    assert fast.memory_bytes() < 0.7 * float32_bytes  # most weights are matmul weights
    with torch.inference_mode():
        logits = fast(clips)
        layers = fast.extract_embeddings(clips, layers=[0, -1], aggregation="mean")
    assert logits.shape == (2, 3) and logits.dtype == torch.float32
    assert layers.dtype == torch.float32 and layers.shape == (2, 2 * fast.get_embedding_dim())


def test_checkpoint_loads_into_the_bfloat16_model(tmp_path):
    torch.manual_seed(0)
    reference = rl_core.build_model("esp_aves2_eat_all", device="cpu").eval()
    path = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    fast = rl_core.load_model("esp_aves2_eat_all", checkpoint_path=path, device="cpu", precision="bfloat16")
    assert fast.precision == "bfloat16"
    block_weight = fast.encoder.blocks[0].mlp.fc1.weight
    assert block_weight.dtype == torch.bfloat16
    torch.testing.assert_close(block_weight.float(), reference.encoder.blocks[0].mlp.fc1.weight,
                               atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("key", list(FAMILIES))
def test_unknown_precision_is_an_error(key):
    with pytest.raises(ConfigError, match="precision must be 'float32' or 'bfloat16', got 'float16'"):
        rl_core.build_model(key, precision="float16")


def test_models_without_a_bfloat16_path_refuse_the_argument():
    with pytest.raises(ConfigError, match="unknown argument"):
        rl_core.build_model("esp_aves2_effnetb0_all", precision="bfloat16")
