"""The decoder's cheaper forms of its own layers give the layers' numbers: folded cross-attention, token-order
upscaling and the remembered positional encoding."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.modeling.transformer import ProjectedAttention


def projected_reference(attention: ProjectedAttention, q, k, v):
    """Multi-head attention with every token projected: the textbook form the folds must equal."""
    def heads(x):
        return x.reshape(*x.shape[:2], attention.heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(attention.q_proj(q)), heads(attention.k_proj(k)),
                                         heads(attention.v_proj(v)))
    return attention.out_proj(out.transpose(1, 2).flatten(2))


@pytest.fixture
def attention():
    torch.manual_seed(0)
    layer = ProjectedAttention(64, heads=4, downsample=2)
    with torch.no_grad():  # non-zero biases: the folds must carry every bias correctly
        for bias in (layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias, layer.out_proj.bias):
            bias.uniform_(-1, 1)
    return layer


@pytest.mark.parametrize("shared", [False, True], ids=["per-prompt", "shared-image"])
@pytest.mark.parametrize("direction", ["few_queries", "few_keys"])
def test_folded_attention_equals_projected_attention_with_gradients(attention, direction, shared):
    few, many = torch.randn(2, 3, 64), torch.randn(1 if shared else 2, 200, 64)
    values = torch.randn_like(many) if direction == "few_queries" else torch.randn_like(few)
    q, k = (few, many) if direction == "few_queries" else (many, few)
    q.requires_grad_(True)
    folded = getattr(attention, f"_{direction}")(q, k, values)
    expected = projected_reference(attention, *(x.expand(2, -1, -1) for x in (q, k, values)))
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)
    weight = attention.q_proj.weight
    folded_grads = torch.autograd.grad(folded.square().sum(), (q, weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, weight))
    for got, want in zip(folded_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_attention_folds_only_when_the_few_side_is_small_enough(attention, monkeypatch):
    taken = []
    monkeypatch.setattr(attention, "_few_queries", lambda *a: taken.append("few_queries") or a[0])
    monkeypatch.setattr(attention, "_few_keys", lambda *a: taken.append("few_keys") or a[0])
    few, many, more = torch.randn(1, 7, 64), torch.randn(1, 50, 64), torch.randn(1, 8, 64)
    attention(few, many, many)
    attention(many, few, few)
    result = attention(more, many, many)  # 4 heads x 8 tokens = the width 32: folding saves nothing
    attention(few, few, few)
    assert taken == ["few_queries", "few_keys"]
    torch.testing.assert_close(result, projected_reference(attention, more, many, many))


def test_token_order_upscaling_equals_the_transposed_convolutions_with_gradients():
    torch.manual_seed(1)
    decoder = build_sam("vit_mini").mask_decoder
    with torch.no_grad():
        for parameter in decoder.output_upscaling.parameters():
            parameter.uniform_(-0.5, 0.5)
    dim, height, width = decoder.iou_token.weight.shape[1], 5, 3
    tokens = torch.randn(2, height * width, dim, requires_grad=True)
    hyper = torch.randn(2, 4, dim // 8)
    image = tokens.transpose(1, 2).reshape(2, dim, height, width)
    upscaled = decoder.output_upscaling(image)  # (B, D/8, 4h, 4w)
    expected = torch.einsum("bmc,bchw->bmhw", hyper, upscaled)
    got = decoder._mask_logits(tokens, hyper, height, width)
    assert got.shape == (2, 4, 4 * height, 4 * width)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    weight = decoder.output_upscaling[0].weight
    weights = torch.randn_like(got)  # a loss that weighs every pixel differently: placement errors show
    got_grads = torch.autograd.grad((got * weights).sum(), (tokens, weight))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (tokens, weight))
    for value, reference in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(value, reference, atol=1e-4, rtol=1e-4)


def test_remembered_positional_encoding_follows_new_weights():
    model = build_sam("vit_mini")
    encoder = model.prompt_encoder
    first = encoder.get_dense_pe()
    assert encoder.get_dense_pe() is first
    state = model.state_dict()
    state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, encoder.embed_dim // 2)
    model.load_state_dict(state)
    again = encoder.get_dense_pe()
    assert not torch.allclose(again, first)
    torch.testing.assert_close(again, encoder.pe_layer.grid(*encoder.image_embedding_size)[None])


def test_one_prompt_against_several_images_broadcasts_like_the_plain_attention(attention):
    prompt, images = torch.randn(1, 3, 64), torch.randn(2, 200, 64)
    torch.testing.assert_close(attention(prompt, images, images),
                               projected_reference(attention, prompt.expand(2, -1, -1), images, images))
