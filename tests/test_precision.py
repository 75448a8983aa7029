"""precision="bfloat16" with a checkpoint (the bf16 contract of every family that offers it is in
test_model_contract.py)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

import rl_core


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
