#!/usr/bin/env python3
"""Generates Fixtures/backward: PyTorch autograd gradients of scaled-dot-product
attention and of attention layers, the golden cases of BackwardGoldenTests.

Set-up (once, about a minute), as ../shared/tools/torch_sdpa_bench.py's docstring:
    python3 -m venv "$VENV" && "$VENV"/bin/pip install torch numpy safetensors
Use (from the package root):
    "$VENV"/bin/python Tests/AttentionTests/Fixtures/make_backward_golden.py

Every case is one safetensors file with its inputs, the output gradient `dout`
(the loss is sum(out * dout)) and PyTorch's gradients; index.json lists the
cases with their parameters and the PyTorch version. All in float32 on CPU,
math as PyTorch computes it (no dropout: PyTorch's dropout cells are not Philox).
"""
import json, os, sys
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backward")
torch.manual_seed(0)
cases = []


def save(name, op, params, tensors):
    tensors = {k: v.detach().contiguous().to(torch.float32) if v.dtype != torch.uint8 else v.contiguous()
               for k, v in tensors.items()}
    meta = {"op": op, "params": json.dumps(params), "torch": torch.__version__}
    save_file(tensors, os.path.join(OUT, name + ".safetensors"), metadata=meta)
    cases.append({"name": name, "op": op, "params": params,
                  "tensors": {k: list(v.shape) for k, v in tensors.items()}})


def sdpa_case(name, B, Hq, Hkv, Lq, Lk, D, Dv=None, causal=None, mask=None, scale=None):
    """causal: None, "top_left" (is_causal) or "bottom_right" (as a tril keep mask)."""
    Dv = Dv or D
    q = torch.randn(B, Hq, Lq, D, requires_grad=True)
    k = torch.randn(B, Hkv, Lk, D, requires_grad=True)
    v = torch.randn(B, Hkv, Lk, Dv, requires_grad=True)
    dout = torch.randn(B, Hq, Lq, Dv)
    tensors, attn_mask = {}, None
    if causal == "bottom_right":
        attn_mask = torch.ones(Lq, Lk, dtype=torch.bool).tril(diagonal=Lk - Lq)
    elif mask == "keep":
        attn_mask = torch.rand(Lq, Lk) > 0.3
        attn_mask[:, 0] = True  # no fully masked row (PyTorch gives NaN there, we give zeros)
        tensors["mask_keep"] = attn_mask.to(torch.uint8)
    elif mask == "additive":
        attn_mask = torch.randn(Lq, Lk)
        attn_mask[torch.rand(Lq, Lk) > 0.8] = float("-inf")
        attn_mask[:, 0] = 0.0
        tensors["mask_additive"] = attn_mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal == "top_left",
                                         scale=scale, enable_gqa=Hkv != Hq)
    out.backward(dout)
    tensors.update(q=q, k=k, v=v, dout=dout, out=out, dq=q.grad, dk=k.grad, dv=v.grad)
    call = (f"F.scaled_dot_product_attention(q, k, v, attn_mask={'tril(Lk-Lq)' if causal == 'bottom_right' else mask}, "
            f"is_causal={causal == 'top_left'}, scale={scale}, enable_gqa={Hkv != Hq}); out.backward(dout)")
    save(name, "sdpa", {"B": B, "Hq": Hq, "Hkv": Hkv, "Lq": Lq, "Lk": Lk, "D": D, "Dv": Dv, "causal": causal,
                        "mask": mask, "scale": scale, "call": call}, tensors)


def mha_case(name, B, L, S, E, heads, causal=False, cross=False, key_padding=False, bias=True):
    """nn.MultiheadAttention(batch_first=True), eval mode."""
    mha = torch.nn.MultiheadAttention(E, heads, bias=bias, batch_first=True)
    x_q = torch.randn(B, L, E, requires_grad=True)
    x_kv = torch.randn(B, S, E, requires_grad=True) if cross else x_q
    kpm = None
    tensors = {}
    if key_padding:
        kpm = torch.zeros(B, S, dtype=torch.bool)
        kpm[0, -2:] = True
        tensors["key_padding_keep"] = (~kpm).to(torch.uint8)
    attn_mask = torch.nn.Transformer.generate_square_subsequent_mask(L) if causal else None
    y, _ = mha(x_q, x_kv, x_kv, key_padding_mask=kpm, attn_mask=attn_mask, is_causal=causal, need_weights=False)
    dout = torch.randn_like(y)
    y.backward(dout)
    tensors.update(x_q=x_q, dout=dout, out=y, in_proj_weight=mha.in_proj_weight, out_proj_weight=mha.out_proj.weight,
                   grad_x_q=x_q.grad, grad_in_proj_weight=mha.in_proj_weight.grad,
                   grad_out_proj_weight=mha.out_proj.weight.grad)
    if bias:
        tensors.update(in_proj_bias=mha.in_proj_bias, out_proj_bias=mha.out_proj.bias,
                       grad_in_proj_bias=mha.in_proj_bias.grad, grad_out_proj_bias=mha.out_proj.bias.grad)
    if cross:
        tensors.update(x_kv=x_kv, grad_x_kv=x_kv.grad)
    save(name, "mha", {"B": B, "L": L, "S": S, "E": E, "num_heads": heads, "causal": causal, "cross_attention": cross,
                       "key_padding": key_padding, "bias": bias,
                       "call": "nn.MultiheadAttention(E, heads, bias, batch_first=True)(x_q, x_kv, x_kv, "
                               "key_padding_mask, attn_mask=causal, is_causal, need_weights=False)"}, tensors)


class BookMultiHeadAttention(torch.nn.Module):
    """Raschka, "Build a Large Language Model (From Scratch)", §3.6.2, written from the
    book's description; with kv_heads < num_heads, grouped-query attention (the key and
    value projections are kv_heads · head_dim wide, heads of a group share them)."""

    def __init__(self, d_in, d_out, context_length, num_heads, qkv_bias=False, kv_heads=None):
        super().__init__()
        self.num_heads, self.kv_heads, self.head_dim = num_heads, kv_heads or num_heads, d_out // num_heads
        self.W_query = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = torch.nn.Linear(d_in, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.W_value = torch.nn.Linear(d_in, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = torch.nn.Linear(d_out, d_out)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, n, _ = x.shape
        q = self.W_query(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        group = self.num_heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(2, 3)
        scores = scores.masked_fill(self.mask.bool()[:n, :n], float("-inf"))
        weights = torch.softmax(scores / self.head_dim ** 0.5, dim=-1)
        context = (weights @ v).transpose(1, 2).contiguous().view(b, n, self.num_heads * self.head_dim)
        return self.out_proj(context)


def book_case(name, B, L, d_in, d_out, heads, kv_heads=None, qkv_bias=False):
    m = BookMultiHeadAttention(d_in, d_out, L, heads, qkv_bias=qkv_bias, kv_heads=kv_heads)
    x = torch.randn(B, L, d_in, requires_grad=True)
    y = m(x)
    dout = torch.randn_like(y)
    y.backward(dout)
    tensors = dict(x=x, dout=dout, out=y, grad_x=x.grad)
    for layer in ["W_query", "W_key", "W_value", "out_proj"]:
        lin = getattr(m, layer)
        tensors[f"{layer}.weight"] = lin.weight
        tensors[f"grad_{layer}.weight"] = lin.weight.grad
        if lin.bias is not None:
            tensors[f"{layer}.bias"] = lin.bias
            tensors[f"grad_{layer}.bias"] = lin.bias.grad
    save(name, "book_mha", {"B": B, "L": L, "d_in": d_in, "d_out": d_out, "num_heads": heads,
                            "kv_heads": kv_heads or heads, "qkv_bias": qkv_bias,
                            "call": "BookMultiHeadAttention(d_in, d_out, L, heads, qkv_bias, kv_heads)(x)"}, tensors)


def main():
    os.makedirs(OUT, exist_ok=True)
    sdpa_case("b_basic", 2, 3, 3, 5, 7, 4)
    sdpa_case("b_causal_tile_edge", 1, 2, 2, 65, 65, 16, causal="top_left")
    sdpa_case("b_causal_br_q3_k6", 1, 2, 2, 3, 6, 8, causal="bottom_right")
    sdpa_case("b_causal_tl_q6_k3", 1, 1, 1, 6, 3, 8, causal="top_left")
    sdpa_case("b_gqa_4q_2kv", 1, 4, 2, 9, 70, 8)
    sdpa_case("b_mask_keep", 1, 2, 2, 8, 11, 5, mask="keep")
    sdpa_case("b_mask_additive", 2, 1, 1, 7, 9, 3, mask="additive")
    sdpa_case("b_scale_dv", 1, 2, 1, 10, 12, 6, Dv=5, scale=0.3)
    sdpa_case("b_tile_d80", 1, 1, 1, 65, 129, 80)
    mha_case("m_self", 2, 5, 5, 16, 4)
    mha_case("m_causal", 2, 6, 6, 8, 2, causal=True)
    mha_case("m_cross_padding", 2, 4, 6, 12, 3, cross=True, key_padding=True)
    mha_case("m_nobias", 1, 5, 5, 8, 2, bias=False)
    book_case("k_book_mha", 2, 6, 6, 8, 2)
    book_case("k_book_gqa", 2, 5, 8, 12, 4, kv_heads=2, qkv_bias=True)
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump({"generator": "Tests/AttentionTests/Fixtures/make_backward_golden.py",
                   "torch": torch.__version__, "python": sys.version.split()[0], "cases": cases}, f, indent=1)
    print(f"{len(cases)} cases in {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
