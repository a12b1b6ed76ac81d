"""MFA / MFA-KR causal LM in PyTorch, exactly as shared/spec/model-format.md writes it.

Parameter names equal the exported tensor names (lm_head is tied and not exported
when tie_word_embeddings is set). Works with PyTorch 1.13 (CPU, no SDPA) and 2.x.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * w, plain weight, computed in fp32."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(dt)


def rope_cos_sin(T, hd, theta, device, offset=0):
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=device) / hd)  # [hd/2]
    pos = torch.arange(offset, offset + T, dtype=torch.float64, device=device)
    ang = pos[:, None] * inv_freq[None, :]                      # [T, hd/2]
    ang = torch.cat([ang, ang], dim=-1)                         # repeated over the two halves
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # x [..., T, hd] ; cos/sin [T, hd]; computed in fp32
    dt = x.dtype
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(dt)


class MFAAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, C, H, hd = cfg["hidden_size"], cfg["share_q_dim"], cfg["num_attention_heads"], cfg["head_dim"]
        self.H, self.hd, self.kr = H, hd, cfg.get("key_reuse", False)
        self.q_proj = nn.Linear(d, C, bias=False)
        self.inter_norm = RMSNorm(C, cfg["rms_norm_eps"])
        self.wq = nn.Linear(C, H * hd, bias=False)
        self.k_proj = nn.Linear(d, hd, bias=False)
        if self.kr:
            self.v_proj = nn.Linear(hd, hd, bias=False)
            self.v_gate = nn.Parameter(torch.zeros(hd))
        else:
            self.v_proj = nn.Linear(d, hd, bias=False)
        self.o_proj = nn.Linear(H * hd, d, bias=False)

    def forward(self, x, cos, sin, explicit=False):
        B, T, _ = x.shape
        c = self.inter_norm(self.q_proj(x))
        q = self.wq(c).view(B, T, self.H, self.hd).transpose(1, 2)       # [B,H,T,hd]
        k = self.k_proj(x)                                               # [B,T,hd]
        if self.kr:
            v = k + self.v_gate.to(k.dtype) * self.v_proj(k)             # k BEFORE RoPE
        else:
            v = self.v_proj(x)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin).unsqueeze(1)                         # [B,1,T,hd]
        v = v.unsqueeze(1)
        if HAS_SDPA and not explicit:
            try:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            except TypeError:  # older 2.x without enable_gqa
                o = F.scaled_dot_product_attention(q, k.expand(B, self.H, T, self.hd),
                                                   v.expand(B, self.H, T, self.hd), is_causal=True)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)  # [B,H,T,T]
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            s = s.masked_fill(mask, float("-inf"))
            p = torch.softmax(s.float(), dim=-1).to(v.dtype)
            o = torch.matmul(p, v)
        o = o.transpose(1, 2).reshape(B, T, self.H * self.hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, I = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(d, I, bias=False)
        self.up_proj = nn.Linear(d, I, bias=False)
        self.down_proj = nn.Linear(I, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = MFAAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, explicit=False):
        h = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, explicit))
        return h + self.drop(self.mlp(self.post_attention_layernorm(h)))


class Inner(nn.Module):
    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Layer(cfg, dropout) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class MFAForCausalLM(nn.Module):
    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg, dropout)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight
        self.drop = nn.Dropout(dropout)
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self._init()

    def _init(self):
        std = 0.02
        L = self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if name.endswith("v_gate"):
                nn.init.zeros_(p)
            elif name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif p.dim() == 2:
                s = std / math.sqrt(2 * L) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, 0.0, s)

    def forward(self, ids, explicit=False):
        B, T = ids.shape
        cos, sin = rope_cos_sin(T, self.cfg["head_dim"], self.theta, ids.device)
        x = self.drop(self.model.embed_tokens(ids))
        for layer in self.model.layers:
            x = layer(x, cos, sin, explicit)
        return self.lm_head(self.model.norm(x))

    def export_state(self):
        """name -> tensor, the tensors the spec lists (no lm_head when tied)."""
        sd = {k: v for k, v in self.state_dict().items()}
        if self.cfg.get("tie_word_embeddings", False):
            sd.pop("lm_head.weight", None)
        return sd


def count_params(model):
    return sum(p.numel() for p in model.export_state().values())
