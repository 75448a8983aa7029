"""The model-family contract (rl_core/models/base.py), checked for every built-in family in the class registry.

The family list comes from ``list_model_classes(builtin=True)``: a new file in ``rl_core/models/`` is checked here
without editing this test. Each family is built from its class name with random weights (families whose weights
ship in a wheel load those), and its state dict is compared with the fixture in tests/fixtures/ (see
``expected_shapes``). Family files keep the tests that check real numbers (front ends, parity, checkpoint formats).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import rl_core
from rl_core.checkpoints import load_state_dict
from rl_core.errors import ConfigError, InvalidAudioTensorError, MissingDependencyError
from rl_core.loading import class_spec
from rl_core.models.base import ModelBase
from rl_core.registry import get_model_class, list_model_classes

FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = list_model_classes(builtin=True)
BF16_FAMILIES = [name for name in FAMILIES if get_model_class(name).supports_bfloat16]
#: the base arguments a family passes through ``**kwargs`` instead of retyping them
PASSED_THROUGH = {"device", "num_classes", "return_features_only", "pretrained"}


def clips(model: ModelBase, batch: int = 2, seconds: float = 1.0, seed: int = 1) -> torch.Tensor:
    """Noise plus a tone, ``seconds`` long (at least the model's shortest input)."""
    n = max(int(seconds * model.sample_rate), model.min_input_samples)
    t = torch.arange(n) / model.sample_rate
    noise = 0.05 * torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))
    return noise + 0.2 * torch.sin(2 * torch.pi * 1000 * t)


def total_forward_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def has_torch_weights(model: ModelBase) -> bool:
    return bool(model.state_dict())


def shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


def expected_shapes(family: str, model: ModelBase) -> dict[str, list[int]]:
    """Parameter name -> shape of the family's default build (no head).

    From ``tests/fixtures/<family>_state_dict_shapes.json``, or ``<family>_<default variant>_...`` where the
    constructor takes ``<family>_variant``; tables written from the reference code come in three layouts: a plain
    table; avex's ``{"without_head": ...}`` (avex keeps torchvision's ImageNet layer without a head, rl_core drops
    it: keys under the classifier prefix are left out); ``{variant: {"num_classes", "shapes"}}``, whose first
    variant is the default build. A family without a fixture file but with bundled weights is compared with them.
    """
    cls = type(model)
    variant = inspect.signature(cls.__init__).parameters.get(f"{family}_variant")
    candidates = [FIXTURES / f"{family}_state_dict_shapes.json"]
    if variant is not None:
        candidates.append(FIXTURES / f"{family}_{variant.default}_state_dict_shapes.json")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        bundled = cls.bundled_weights_path()
        if bundled is None:
            pytest.fail(f"family '{family}' has no fixture: add {candidates[-1].name} (name -> shape of the reference "
                        "implementation's state dict) to tests/fixtures/")
        return shapes(model.convert_state_dict(load_state_dict(bundled)))
    table = json.loads(path.read_text())
    if all(isinstance(v, list) for v in table.values()):
        return table
    if "without_head" in table:
        return {k: v for k, v in table["without_head"].items() if not k.startswith(cls.classifier_prefix)}
    default = next(v for v in table.values() if isinstance(v, dict) and v.get("num_classes") is None)
    return default["shapes"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> tuple[str, ModelBase]:
    name = request.param
    torch.manual_seed(0)
    try:
        model = rl_core.build_model(name, device="cpu").eval()
    except MissingDependencyError as err:
        # only a family whose weights come with a wheel may be absent, and only when that wheel is
        assert get_model_class(name).bundled_weights_package and get_model_class(name).bundled_weights_path() is None
        pytest.skip(f"{name}: {err}")
    return name, model


# ------------------------------------------------------------------------------------------------ declaration
@pytest.mark.parametrize("name", FAMILIES)
def test_family_declares_the_contract(name):
    cls = get_model_class(name)
    assert issubclass(cls, ModelBase) and cls.name == name
    assert cls.__module__ == f"rl_core.models.{name}", "one architecture per file, named after the family"
    params = inspect.signature(cls.__init__).parameters
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), "base arguments via **kwargs"
    assert PASSED_THROUGH.isdisjoint(params), f"{name} retypes base arguments {PASSED_THROUGH & set(params)}"
    assert cls.default_sample_rate > 0 and cls.default_window_seconds > 0 and cls.preferred_batch_size >= 1
    assert cls.output_activation in ("sigmoid", "softmax")
    assert cls.cpu_micro_batch_windows is None or cls.cpu_micro_batch_windows >= 1
    bundled = cls.bundled_weights_path()
    assert bundled is None or (cls.bundled_weights_package and Path(bundled).is_file())
    assert ("precision" in params) == cls.supports_bfloat16


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_arguments_are_errors(name):
    with pytest.raises(ConfigError, match="unknown argument.*'no_such_option'"):
        rl_core.build_model(name, no_such_option=1)
    if not get_model_class(name).supports_bfloat16:
        with pytest.raises(ConfigError, match="unknown argument.*'precision'"):
            rl_core.build_model(name, precision="bfloat16")


# ------------------------------------------------------------------------------------------------ weights layout
def test_state_dict_matches_the_fixture(family):
    name, model = family
    if not has_torch_weights(model):
        assert model.cpu_only, f"{name} has no torch weights, so it must compute outside torch (cpu_only)"
        return
    ours = shapes(model.state_dict())
    assert ours == expected_shapes(name, model)
    if not model.has_classifier:
        assert type(model).num_classes_in_state_dict(model.state_dict()) is None


def test_a_head_adds_only_classifier_weights(family):
    name, model = family
    if not has_torch_weights(model):
        return  # a fixed head inside a non-torch graph (BirdNET)
    cls = type(model)

    def build_with_a_head() -> ModelBase:
        try:
            with torch.device("meta"):  # names and shapes only: no second copy of the weights
                return cls(num_classes=3)
        except ConfigError:
            raise
        except Exception:  # a constructor that computes on real tensors
            return rl_core.build_model(name, num_classes=3)

    try:
        headed = build_with_a_head()
    except ConfigError as err:  # a family whose head is fixed: its classes come with its weights
        assert model.has_classifier, err
        return
    extra = {k: v for k, v in shapes(headed.state_dict()).items() if k not in model.state_dict()}
    assert extra and all(k.startswith(cls.classifier_prefix) for k in extra), extra
    assert [3, model.get_embedding_dim()] in extra.values()
    assert cls.num_classes_in_state_dict(headed.state_dict()) == 3


def test_layers_listed_without_weights_equal_the_built_model(family):
    name, model = family
    assert rl_core.list_model_layers(class_spec(name)) == model.list_layers()


# ------------------------------------------------------------------------------------------------ outputs
def test_output_shapes_and_embedding_dim(family):
    _, model = family
    x = clips(model)
    dim = model.get_embedding_dim()
    with torch.inference_mode():
        embedding, scores = model.embed_and_score(x)
        out = model(x[:1])
    assert embedding.shape == (2, dim) and embedding.dtype == torch.float32 and torch.isfinite(embedding).all()
    # clips of a batch stay apart (relative: a randomly initialised CNN may give embeddings near 1e-14)
    assert not torch.allclose(embedding[0], embedding[1], rtol=1e-3, atol=0)
    if model.has_classifier:
        assert scores.shape == (2, model.num_classes) and out.shape == (1, model.num_classes)
        assert ((scores >= 0) & (scores <= 1)).all()
    else:
        assert scores is None
        torch.testing.assert_close(out, embedding[:1], atol=1e-4, rtol=1e-4)
    last = model.extract_embeddings(x[:1])  # last layer, mean over tokens
    assert last.shape == (1, dim)
    if model.list_layers():
        both = model.extract_embeddings(x[:1], layers=[0, -1], aggregation="mean")  # concatenated in that order
        assert both.ndim == 2 and both.shape[1] > dim
        torch.testing.assert_close(both[:, -dim:], last)


def test_layer_hooks_are_removed_after_use_and_after_a_failure(family):
    _, model = family
    x = clips(model, batch=1)
    before = total_forward_hooks(model)
    model.extract_embeddings(x, layers="all", aggregation="mean")
    assert total_forward_hooks(model) == before
    modules = model.layer_modules()
    if not modules:
        return

    def explode(_module, _inputs):
        raise RuntimeError("boom in the last layer")

    handle = list(modules.values())[-1].register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            model.extract_embeddings(x, layers="all")
    finally:
        handle.remove()
    assert total_forward_hooks(model) == before


# ------------------------------------------------------------------------------------------------ inputs
def test_documented_input_conversions(family):
    """What the model sees (prepare_input) for each documented input form, and one pass of a converted input."""
    _, model = family
    x = clips(model, batch=1, seconds=0.5)
    reference = model.prepare_input(x)
    assert reference.dtype == torch.float32 and reference.device == model.device
    torch.testing.assert_close(model.prepare_input(x[0].numpy()), reference)  # 1-D gains a batch axis
    torch.testing.assert_close(model.prepare_input(x.double()), reference)  # float64 -> float32
    pcm = (x * 32767).round().to(torch.int16)
    torch.testing.assert_close(model.prepare_input(pcm), pcm.float() / 32768)  # int16 scaled by 1/32768
    stereo = torch.stack([0.5 * x, 1.5 * x], dim=1)  # (B, 2, samples): channel mean is x
    torch.testing.assert_close(model.prepare_input(stereo), reference)
    short = model.prepare_input(torch.ones(1, 10))  # zero-padded to the shortest usable input
    assert short.shape == (1, max(10, model.min_input_samples)) and short[0, 9] == 1 and short[0, 10:].eq(0).all()
    with torch.inference_mode():
        torch.testing.assert_close(model.embed_and_score(stereo)[0], model.embed_and_score(x)[0], atol=1e-4,
                                   rtol=1e-4)


def test_bad_inputs_are_named_errors(family):
    _, model = family
    n = model.min_input_samples
    for bad, match in [(torch.zeros(1, 1, 2, n), "shape"), (torch.zeros(1, n, dtype=torch.int32), "dtype"),
                       (torch.full((1, n), float("nan")), "NaN"), (torch.zeros(1, 0), "empty")]:
        with pytest.raises(InvalidAudioTensorError, match=match):
            model(bad)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_safetensors_round_trip(family, tmp_path):
    name, model = family
    if not has_torch_weights(model):
        return  # nothing to save: the weights are a bundled non-torch file
    path = tmp_path / f"{name}.safetensors"
    # clone: a family may share one tensor between layers (BEATs' bias table); safetensors refuses aliases
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = rl_core.load_model(class_spec(name), checkpoint_path=path, device="cpu")
    assert shapes(loaded.state_dict()) == shapes(model.state_dict()) and not loaded.pretrained
    x = clips(model, batch=1)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.embed_and_score(x)[0], model.embed_and_score(x)[0])


# ------------------------------------------------------------------------------------------------ bfloat16
@pytest.fixture(scope="module", params=BF16_FAMILIES)
def float32_and_bfloat16(request):
    torch.manual_seed(0)
    reference = rl_core.build_model(request.param, device="cpu", num_classes=3).eval()
    fast = rl_core.build_model(request.param, device="cpu", num_classes=3, precision="bfloat16").eval()
    fast.load_state_dict(reference.state_dict())
    return reference, fast, clips(reference, batch=1)


def test_bfloat16_embeddings_are_close_to_float32(float32_and_bfloat16):
    reference, fast, x = float32_and_bfloat16
    with torch.inference_mode():
        want, got = reference.embed_and_score(x)[0], fast.embed_and_score(x)[0]
        features = fast.forward_features(fast.prepare_input(x))
    assert fast.precision == "bfloat16"
    assert got.dtype == torch.float32 and features.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(want, got, dim=-1).min() > 0.999
    assert not torch.equal(want, got)  # it really ran in bf16


def test_bfloat16_stores_matmul_weights_in_bf16_and_keeps_the_head_float32(float32_and_bfloat16):
    _, fast, x = float32_and_bfloat16
    dtypes = {p.dtype for name, p in fast.named_parameters() if not name.startswith(fast.classifier_prefix)}
    assert dtypes == {torch.float32, torch.bfloat16}  # norms stay float32
    assert fast.classifier.weight.dtype == torch.float32
    float32_bytes = sum(p.numel() * 4 for p in fast.parameters()) + sum(b.numel() * b.element_size()
                                                                         for b in fast.buffers())
    assert fast.memory_bytes() < 0.7 * float32_bytes  # most weights are matmul weights
    with torch.inference_mode():
        logits = fast(x)
        layers = fast.extract_embeddings(x, layers=[0, -1], aggregation="mean")
    assert logits.shape == (1, 3) and logits.dtype == torch.float32
    assert layers.dtype == torch.float32 and layers.shape == (1, 2 * fast.get_embedding_dim())


@pytest.mark.parametrize("name", BF16_FAMILIES)
def test_unknown_precision_is_an_error(name):
    with pytest.raises(ConfigError, match="precision must be 'float32' or 'bfloat16', got 'float16'"):
        rl_core.build_model(name, precision="float16")


def test_registry_families_are_the_model_files():
    files = {p.stem for p in Path(rl_core.models.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(FAMILIES) == files - {"base"}
    assert all(get_model_class(n).name == n for n in FAMILIES)
