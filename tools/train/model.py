"""MFA / MFA-KR causal LM in PyTorch, exactly as shared/spec/model-format.md writes it,
and the baselines of the paper replication (docs/paper-replication.md) in the same frame:
Llama-style MHA / GQA / MQA (q/k/v/o_proj, num_key_value_heads) and DeepSeek-V2's MLA
(q_proj or q_a_proj/q_a_layernorm/q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj,
o_proj). The attention is chosen by cfg["model_type"]: "mfa" (key_reuse picks MFA-KR),
"llama", "deepseek_v2"; everything else (embeddings, norms, SwiGLU MLP, init) is shared.

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


def sdpa_causal(q, k, v, explicit=False):
    """Causal softmax(q k^T / sqrt(dq)) v; k/v may have fewer heads than q (GQA/MQA/MFA:
    q head h reads kv head h // (Hq / Hkv)); v may be narrower than q/k (MLA)."""
    B, Hq, T, dq = q.shape
    Hk, dv = k.shape[1], v.shape[-1]
    if HAS_SDPA and not explicit:
        if dv != dq:  # fused kernels want one head dim: zero-pad v, slice the output
            v = F.pad(v, (0, dq - dv))
        try:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hk != Hq)
        except TypeError:  # older 2.x without enable_gqa
            if Hk != Hq:
                k = k.repeat_interleave(Hq // Hk, dim=1)
                v = v.repeat_interleave(Hq // Hk, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return o[..., :dv]
    if Hk != Hq:
        k = k.repeat_interleave(Hq // Hk, dim=1)
        v = v.repeat_interleave(Hq // Hk, dim=1)
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dq)  # [B,H,T,T]
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(v.dtype)
    return torch.matmul(p, v)


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
        o = sdpa_causal(q, k, v, explicit)
        o = o.transpose(1, 2).reshape(B, T, self.H * self.hd)
        return self.o_proj(o)


class LlamaAttention(nn.Module):
    """MHA (num_key_value_heads = H), GQA (1 < KV < H), MQA (KV = 1); RoPE on all of q and k."""

    def __init__(self, cfg):
        super().__init__()
        d, H, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["head_dim"]
        self.H, self.KV, self.hd = H, cfg.get("num_key_value_heads", H), hd
        assert H % self.KV == 0
        self.q_proj = nn.Linear(d, H * hd, bias=False)
        self.k_proj = nn.Linear(d, self.KV * hd, bias=False)
        self.v_proj = nn.Linear(d, self.KV * hd, bias=False)
        self.o_proj = nn.Linear(H * hd, d, bias=False)

    def forward(self, x, cos, sin, explicit=False):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = sdpa_causal(q, k, v, explicit)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.H * self.hd))


def deinterleave(x):
    """DeepSeek-V2's HF code reads the RoPE part of q and k as interleaved pairs and
    regroups them into halves before rotate_half; done here too, so the weights load there."""
    *lead, d = x.shape
    return x.view(*lead, d // 2, 2).transpose(-1, -2).reshape(*lead, d)


class MLAAttention(nn.Module):
    """DeepSeek-V2 multi-head latent attention (dense). Per token and layer the cache holds
    c_kv = kv_a_layernorm(kv_a_proj_with_mqa(x)[:kv_lora_rank]) and the rotated shared key
    k_pe = RoPE(kv_a_proj_with_mqa(x)[kv_lora_rank:]); kv_b_proj expands c_kv into each head's
    no-RoPE key (qk_nope_head_dim) and value (v_head_dim). Queries: q_proj, or the low-rank
    q_a_proj -> q_a_layernorm -> q_b_proj when q_lora_rank is set; each head's query is
    [nope | rope]. Scale 1/sqrt(qk_nope_head_dim + qk_rope_head_dim)."""

    def __init__(self, cfg):
        super().__init__()
        d, H = cfg["hidden_size"], cfg["num_attention_heads"]
        self.H = H
        self.dn, self.dr, self.dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.c = cfg["kv_lora_rank"]
        self.qr = cfg.get("q_lora_rank") or 0
        dq = self.dn + self.dr
        if self.qr:
            self.q_a_proj = nn.Linear(d, self.qr, bias=False)
            self.q_a_layernorm = RMSNorm(self.qr, cfg["rms_norm_eps"])
            self.q_b_proj = nn.Linear(self.qr, H * dq, bias=False)
        else:
            self.q_proj = nn.Linear(d, H * dq, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, self.c + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.c, cfg["rms_norm_eps"])
        self.kv_b_proj = nn.Linear(self.c, H * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(H * self.dv, d, bias=False)

    def forward(self, x, cos, sin, explicit=False):
        B, T, _ = x.shape
        H, dn, dr, dv = self.H, self.dn, self.dr, self.dv
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if self.qr else self.q_proj(x)
        q = q.view(B, T, H, dn + dr).transpose(1, 2)                      # [B,H,T,dn+dr]
        q_nope, q_pe = q[..., :dn], q[..., dn:]
        kv_a = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv_a[..., :self.c], kv_a[..., self.c:]
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(B, T, H, dn + dv).transpose(1, 2)
        k_nope, v = kv[..., :dn], kv[..., dn:]
        q_pe = apply_rope(deinterleave(q_pe), cos, sin)
        k_pe = apply_rope(deinterleave(k_pe), cos, sin).unsqueeze(1)      # [B,1,T,dr], shared
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(B, H, T, dr)], dim=-1)
        o = sdpa_causal(q, k, v, explicit)                                # [B,H,T,dv]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * dv))


ATTENTION = {"mfa": MFAAttention, "llama": LlamaAttention, "deepseek_v2": MLAAttention}


def rope_dim(cfg):
    return cfg["qk_rope_head_dim"] if cfg.get("model_type") == "deepseek_v2" else cfg["head_dim"]


def kv_elements(cfg):
    """Elements cached per token and layer, and the cached vectors' lengths (for int8 scales)."""
    t = cfg.get("model_type", "mfa")
    if t == "mfa":
        hd = cfg["head_dim"]
        return [hd] if cfg.get("key_reuse") else [hd, hd]
    if t == "llama":
        return [cfg["head_dim"]] * (2 * cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    if t == "deepseek_v2":
        return [cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]]
    raise ValueError(t)


def kv_bytes_per_token(cfg, dtype="f16"):
    """F16: 2 bytes per cached element; int8 (the engine's --kv-cache-dtype int8 layout): 1 byte
    per element plus one F16 scale per group of each cached row (a head's k or v; MLA's latent and
    rope key are one row), the group 64 elements where 64 divides the row, else 32 where 32 does,
    else the whole row; all layers."""
    vecs = kv_elements(cfg)
    if dtype == "f16":
        per_layer = 2 * sum(vecs)
    else:
        if cfg.get("model_type") == "deepseek_v2":
            vecs = [sum(vecs)]
        grp = lambda n: 64 if n % 64 == 0 else 32 if n % 32 == 0 else n
        per_layer = sum(n + 2 * (n // grp(n)) for n in vecs)
    return per_layer * cfg["num_hidden_layers"]


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
        self.self_attn = ATTENTION[cfg.get("model_type", "mfa")](cfg)
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
        cos, sin = rope_cos_sin(T, rope_dim(self.cfg), self.theta, ids.device)
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


CausalLM = MFAForCausalLM  # the same class serves every attention kind (cfg["model_type"])


def count_params(model):
    return sum(p.numel() for p in model.export_state().values())
