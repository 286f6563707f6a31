"""The ViT: equal to HF's CLIPVisionModel on random tiny configs; patch embedding = stride-p conv; bad inputs."""

import pytest
import torch
from PIL import Image

from minimal.images import normalize, to_tensor
from minimal.vit import (
    VisionTransformer,
    ViTConfig,
    conv_weight_to_linear,
    convert_hf_state_dict,
    patchify,
    unpatchify,
)

transformers = pytest.importorskip("transformers")

HF_CONFIGS = [
    # (hidden, heads, layers, mlp, image, patch, act)
    dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64, image_size=16,
         patch_size=4, hidden_act="quick_gelu"),
    dict(hidden_size=48, num_attention_heads=3, num_hidden_layers=3, intermediate_size=80, image_size=24,
         patch_size=8, hidden_act="gelu"),
    dict(hidden_size=64, num_attention_heads=8, num_hidden_layers=1, intermediate_size=128, image_size=30,
         patch_size=5, hidden_act="quick_gelu", layer_norm_eps=1e-6),
    dict(hidden_size=40, num_attention_heads=5, num_hidden_layers=4, intermediate_size=40, image_size=32,
         patch_size=16, hidden_act="gelu", num_channels=3),
]


def _hf_vision(kwargs, seed):
    torch.manual_seed(seed)
    cfg = transformers.CLIPVisionConfig(**kwargs)
    model = transformers.CLIPVisionModel(cfg).eval()
    # HF initialises LayerNorms to (1, 0); randomise them so a swapped norm cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("i", range(len(HF_CONFIGS)))
def test_equals_hf_clip_vision(i):
    hf = _hf_vision(HF_CONFIGS[i], seed=i)
    ours = VisionTransformer.from_hf(hf).eval()
    S = HF_CONFIGS[i]["image_size"]
    x = torch.randn(3, 3, S, S, generator=torch.Generator().manual_seed(100 + i))
    with torch.no_grad():
        ref = hf(pixel_values=x, output_hidden_states=True)
        out = ours(x, return_hidden=True)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-5, rtol=1e-5)
    assert len(out.hidden_states) == len(ref.hidden_states) == HF_CONFIGS[i]["num_hidden_layers"] + 1
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_from_hf_state_dict_with_prefix_and_inferred_config():
    hf = _hf_vision(HF_CONFIGS[0], seed=0)
    sd = {"vision_model." + k: v for k, v in hf.state_dict().items()}
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # what old checkpoints carried
    cfg = ViTConfig.from_hf(hf.config)
    ours = VisionTransformer.from_hf_state_dict(sd, cfg)
    inferred = VisionTransformer.from_hf_state_dict(hf.state_dict())  # shapes -> config (heads guessed)
    assert inferred.cfg.image_size == cfg.image_size and inferred.cfg.patch_size == cfg.patch_size
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).pooled, hf(pixel_values=x).pooler_output, atol=1e-5, rtol=1e-5)


def test_hf_mapping_is_strict():
    hf = _hf_vision(HF_CONFIGS[0], seed=0)
    cfg = ViTConfig.from_hf(hf.config)
    sd = dict(hf.state_dict())
    del sd["post_layernorm.bias"]
    sd["encoder.layers.0.extra.weight"] = torch.zeros(1)
    sd["embeddings.position_embedding.weight"] = torch.zeros(5, 32)
    with pytest.raises(ValueError) as e:
        VisionTransformer.from_hf_state_dict(sd, cfg)
    msg = str(e.value)
    assert "missing (1): post_layernorm.bias" in msg
    assert "unexpected (1): transformer.blocks.0.extra.weight" in msg
    assert "position_embedding: given (5, 32) vs" in msg
    with pytest.raises(ValueError, match="mis-shaped"):  # a config that does not fit the weights
        VisionTransformer.from_hf_state_dict(hf.state_dict(), ViTConfig(image_size=16, patch_size=4, width=32,
                                                                         heads=4, layers=2, mlp_hidden=65))


def test_patch_embedding_equals_stride_p_conv():
    torch.manual_seed(0)
    C, D, p = 3, 24, 4
    conv = torch.nn.Conv2d(C, D, kernel_size=p, stride=p, bias=False)
    linear = torch.nn.Linear(p * p * C, D, bias=False)
    with torch.no_grad():
        linear.weight.copy_(conv_weight_to_linear(conv.weight))
    x = torch.randn(2, C, 16, 12)
    by_conv = conv(x).flatten(2).transpose(1, 2)  # (B, N, D), patches row by row
    by_linear = linear(patchify(x, p))
    torch.testing.assert_close(by_linear, by_conv, atol=1e-6, rtol=1e-5)


def test_patchify_layout_and_inverse():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    patches = patchify(x, 4)
    assert patches.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 block; its first entries are pixel (0, 4) in channels r, g, b
    assert patches[0, 1, :3].tolist() == [x[0, 0, 0, 4].item(), x[0, 1, 0, 4].item(), x[0, 2, 0, 4].item()]
    assert torch.equal(unpatchify(patches, 4, 3), x)


def test_shapes_hidden_and_attention_maps():
    cfg = ViTConfig(image_size=16, patch_size=4, width=32, layers=3, heads=4, mlp_hidden=64)
    model = VisionTransformer(cfg).eval()
    x = torch.rand(5, 3, 16, 16)
    out = model(x, return_hidden=True)
    assert out.last_hidden_state.shape == (5, 17, 32) and out.pooled.shape == (5, 32)
    assert len(out.hidden_states) == 4 and out.hidden_states[-1] is out.last_hidden_state
    assert model(x).hidden_states is None
    maps = model.attention_maps(x)
    assert maps.shape == (3, 5, 4, 17, 17)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 5, 4, 17))


def test_same_seed_same_model():
    torch.manual_seed(3)
    a = VisionTransformer(ViTConfig(width=32, heads=2, mlp_hidden=64, layers=1))
    torch.manual_seed(3)
    b = VisionTransformer(ViTConfig(width=32, heads=2, mlp_hidden=64, layers=1))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(a(x).pooled, b(x).pooled)


def test_bad_configs():
    with pytest.raises(ValueError, match="image_size=30 is not divisible by patch_size=8"):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="width=30 is not divisible by heads=4"):
        ViTConfig(width=30)
    with pytest.raises(ValueError, match="'relu6'"):
        ViTConfig(act="relu6")


def test_bad_pixels():
    model = VisionTransformer(ViTConfig(image_size=16, patch_size=4, width=16, heads=2, layers=1, mlp_hidden=16))
    with pytest.raises(ValueError, match=r"torch\.uint8"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"torch\.int64"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="1 channels, the model expects 3"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="4 channels"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="18x18 is not divisible by patch size 4"):
        model(torch.rand(1, 3, 18, 18))
    with pytest.raises(ValueError, match="20x20 does not match"):
        model(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="13x16 is not divisible by patch size 4"):
        patchify(torch.rand(1, 3, 13, 16), 4)
    # float64 input is fine: cast to the model's dtype, as HF does
    assert model(torch.rand(1, 3, 16, 16, dtype=torch.float64)).pooled.dtype == torch.float32


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "RGB"])
def test_pil_images_of_any_mode_reach_the_model_as_rgb(mode):
    """The documented path: PIL image (any mode) -> images.to_tensor (RGB, [0, 1]) -> images.normalize -> the ViT."""
    img = Image.new("RGB", (16, 16), (200, 30, 40)).convert(mode)
    x = to_tensor(img)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    model = VisionTransformer(ViTConfig(image_size=16, patch_size=4, width=16, heads=2, layers=1, mlp_hidden=16))
    assert model(normalize(x)[None]).pooled.shape == (1, 16)


def test_convert_keeps_unknown_keys_for_strict_reporting():
    sd = convert_hf_state_dict({"vision_model.something_else": torch.zeros(1),
                                "vision_model.pre_layrnorm.weight": torch.ones(2)})
    assert set(sd) == {"something_else", "pre_layernorm.weight"}
