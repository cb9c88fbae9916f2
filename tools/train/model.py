"""A small Llama decoder in PyTorch, written to match the Hugging Face Llama conventions exactly.

The parameter names match Hugging Face's LlamaForCausalLM (``model.layers.{i}.self_attn.q_proj.weight``
...) so the saved safetensors load in transformers and in OnnxSteer's ModelBuilder without renaming.
Rotary embeddings use the non-interleaved ``rotate_half`` convention with
``inv_freq = 1 / theta^(2i/d)``; any exporter that follows HF reproduces the logits bit-for-bit up to
float rounding.
"""
import json
import math
import struct
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LlamaConfig:
    vocab_size: int = 1536
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 256
    bos_token_id: int = 0
    eos_token_id: int = 2
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` for this model."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "initializer_range": 0.02,
            "use_cache": True,
        }


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # HF computes the norm in float32 and multiplies the weight after casting back.
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(cfg: LlamaConfig, positions: torch.Tensor):
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = positions.float()[..., None] * inv_freq  # [..., seq, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        h, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.num_attention_heads * hd, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_key_value_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_key_value_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_attention_heads * hd, h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        cfg = self.cfg
        hd = cfg.head_dim
        q = self.q_proj(x).view(b, t, cfg.num_attention_heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.num_key_value_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.num_key_value_heads, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = cfg.num_attention_heads // cfg.num_key_value_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att + mask
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, cfg.num_attention_heads * hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class Inner(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2 style scaled init of the residual projections keeps early training stable.
        for n, p in self.named_parameters():
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.num_hidden_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, input_ids, attention_mask=None, return_hidden=False, skip_head=False, block=None):
        """Logits [b, t, vocab]. ``attention_mask`` [b, t] (1 = real token) supports left padding.
        ``block`` [b, t, t] bool (training only): True where query position i may not attend to key j, on top of
        the causal mask (used to hide the instruction from the response tokens; see train.py); or a list with one
        such tensor (or None) per layer."""
        b, t = input_ids.shape
        if attention_mask is None:
            positions = torch.arange(t).unsqueeze(0).expand(b, t)
            pad = None
        else:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            pad = attention_mask == 0
        cos, sin = rope_cos_sin(self.cfg, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [b, 1, t, d]
        causal = torch.full((t, t), float("-inf")).triu(1)
        mask = causal.unsqueeze(0).unsqueeze(0)
        if pad is not None:
            mask = mask.masked_fill(pad[:, None, None, :], float("-inf"))
            # Padded query rows would be all -inf; give them their own position so softmax stays finite.
            eye = torch.eye(t, dtype=torch.bool)
            mask = mask.masked_fill(eye[None, None] & pad[:, None, :, None], 0.0)
        masks = [mask] * len(self.model.layers)
        if block is not None:
            blocks = block if isinstance(block, list) else [block] * len(masks)
            masks = [mask if blk is None else mask.masked_fill(blk[:, None], float("-inf")) for blk in blocks]
        x = self.model.embed_tokens(input_ids)
        hidden = []
        for layer, m in zip(self.model.layers, masks):
            x = layer(x, cos, sin, m)
            hidden.append(x)
        x = self.model.norm(x)
        if skip_head:
            return None, x
        logits = self.lm_head(x)
        if return_hidden:
            return logits, hidden
        return logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(self, ids, max_new_tokens, eos_ids):
        """Greedy decoding without a KV cache (the model is tiny; clarity over speed)."""
        ids = list(ids)
        out = []
        for _ in range(max_new_tokens):
            ctx = ids[-self.cfg.max_position_embeddings:]
            logits = self.forward(torch.tensor([ctx]))
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if nxt in eos_ids:
                break
        return out


def save_safetensors(path, tensors: dict):
    """Writes float32 tensors in the safetensors format (8-byte LE header length, JSON header, data)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous().cpu()
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces to 8 bytes so the data is aligned (the format allows trailing spaces).
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for blob in blobs:
            f.write(blob)


def load_safetensors(path) -> dict:
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32"
        arr = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out
