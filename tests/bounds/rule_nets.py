"""Small random networks, one per bound rule of today's operator set, with inputs whose intervals
straddle the interesting points (0 for sign / abs, several periods for sin, domain edges for log
and sqrt). A table (name -> factory) that soundness suites can draw from."""

import torch
from torch import nn

F = nn.functional
LIMITS = torch.tensor([0.1, -0.2, 0.0, 0.3])


class Wrap(nn.Module):
    """``out(fn(pre(x)))`` for an elementwise ``fn`` between two linear layers."""

    def __init__(self, fn, d: int = 4, k: int = 3, gain: float = 1.0):
        super().__init__()
        self.fn, self.pre, self.out = fn, nn.Linear(d, d), nn.Linear(d, k)
        with torch.no_grad():
            self.pre.weight.mul_(gain)

    def forward(self, x):
        return self.out(self.fn(self.pre(x)))


class Pair(nn.Module):
    """``out(fn(a(x), b(x)))`` for a function of two input-dependent tensors."""

    def __init__(self, fn, d: int = 4, k: int = 3, shape=None):
        super().__init__()
        self.fn, self.a, self.b, self.out = fn, nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, k)
        self.shape = shape

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        if self.shape is not None:
            a, b = a.view(-1, *self.shape), b.view(-1, *self.shape)
        return self.out(self.fn(a, b).flatten(1))


class Tokens(nn.Module):
    """A (4 tokens x 4 features) sequence through ``block``, mean-pooled to 3 outputs."""

    def __init__(self, block):
        super().__init__()
        self.embed, self.block, self.head = nn.Linear(4, 16), block, nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.block(self.embed(x).view(-1, 4, 4)).mean(1))


class ConvT(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1)
        self.up1 = nn.ConvTranspose1d(2, 1, 3, stride=2)
        self.near, self.bil = nn.Upsample(scale_factor=2), nn.Upsample(size=(3, 5), mode="bilinear")
        self.out = nn.Linear(2 * 8 * 8 * 2 + 2 * 3 * 5 + 9, 3)

    def forward(self, x):
        h = torch.relu(self.up(x))
        parts = [h.flatten(1), self.bil(x).flatten(1), self.up1(x[:, :, 0]).flatten(1)]
        return self.out(torch.cat(parts + [self.near(x).flatten(1)], 1))


class Shapes(nn.Module):
    """Slicing, split, index_select, flip, squeeze, cat with a constant, where, reductions."""

    def __init__(self):
        super().__init__()
        self.pre, self.out = nn.Linear(6, 12), nn.Linear(18, 3)
        self.const = nn.Parameter(torch.randn(1, 2))
        self.register_buffer("mask", torch.tensor([True, False, True, False, False, True]))

    def forward(self, x):
        h = self.pre(x).view(-1, 2, 6)
        a, b = torch.split(h, [1, 1], dim=1)
        a, b = a.squeeze(1), b[:, 0]
        s = torch.index_select(a, 1, torch.tensor([4, 0, 0])) + torch.flip(b[:, 1:4], [1])
        w = torch.where(self.mask, a, torch.sin(b))
        m = torch.cat([h.amax(2), h.amin(2), h.mean(2, keepdim=True)[:, :, 0]], 1)
        c = torch.cat([self.const.expand(x.shape[0], -1), h.sum((1, 2))[:, None]], 1)
        return self.out(torch.cat([s, w, m, c], 1))


class LayerNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre, self.ln, self.out = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.out(self.ln(self.pre(x)))


class Attention(nn.Module):
    def forward(self, h):
        q, k, v = h[..., :2], h[..., 2:], h
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]


class ConvAct(nn.Module):
    """Convolutions around an elementwise function (rows kept as receptive-field windows)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.a, self.b = fn, nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 3, stride=2)
        self.out = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        return self.out(torch.relu(self.b(self.fn(self.a(x)))).flatten(1))


RULE_NETS = {
    "exp": lambda: (Wrap(torch.exp), (4,)),
    "log": lambda: (Wrap(lambda h: torch.log(h.abs() + 0.05)), (4,)),
    "sqrt": lambda: (Wrap(lambda h: torch.sqrt(h.abs() + 1e-4)), (4,)),
    "reciprocal": lambda: (Wrap(lambda h: torch.reciprocal(h.abs() + 0.2)), (4,)),
    "pow": lambda: (Wrap(lambda h: h**3 + (h.abs() + 0.1) ** 1.5 - (h.abs() + 0.3) ** -2), (4,)),
    "rsqrt": lambda: (Wrap(lambda h: torch.rsqrt(h * h + 0.1)), (4,)),
    "sin": lambda: (Wrap(torch.sin, gain=6.0), (4,)),
    "cos": lambda: (Wrap(torch.cos, gain=6.0), (4,)),
    "sign": lambda: (Wrap(torch.sign), (4,)),
    "abs": lambda: (Wrap(torch.abs), (4,)),
    "erf": lambda: (Wrap(torch.erf, gain=2.0), (4,)),
    "gelu": lambda: (Wrap(F.gelu, gain=3.0), (4,)),
    "gelu-tanh": lambda: (Wrap(lambda h: F.gelu(h, approximate="tanh"), gain=3.0), (4,)),
    "gelu-tanh-module": lambda: (Wrap(nn.GELU(approximate="tanh"), gain=3.0), (4,)),
    "clamp": lambda: (Wrap(lambda h: torch.clamp(h, -0.3, 0.4) + F.relu6(3 * h)), (4,)),
    "min-max": lambda: (
        Pair(lambda a, b: torch.maximum(a, b) + torch.minimum(a, LIMITS) + torch.clamp(b, max=0.1)),
        (4,),
    ),
    "mul": lambda: (Pair(lambda a, b: a * b), (4,)),
    "div": lambda: (Pair(lambda a, b: a / (b * b + 0.5)), (4,)),
    "matmul": lambda: (Pair(lambda a, b: a @ b, shape=(2, 2)), (4,)),
    "softmax": lambda: (Wrap(lambda h: torch.softmax(h, -1), gain=3.0), (4,)),
    "log-softmax": lambda: (Wrap(lambda h: F.log_softmax(h, 1), gain=3.0), (4,)),
    "softmax-direct": lambda: (  # more differences than composite.PAIRWISE_MAX
        Wrap(lambda h: torch.softmax(h, -1) + F.log_softmax(h, -1), d=72, gain=0.5),
        (72,),
    ),
    "layer-norm": lambda: (LayerNormNet(), (4,)),
    "shapes": lambda: (Shapes(), (6,)),
    "conv-sign": lambda: (ConvAct(torch.sign), (1, 5, 5)),
    "conv-sin": lambda: (ConvAct(lambda h: torch.sin(4 * h)), (1, 5, 5)),
    "conv-transpose": lambda: (ConvT(), (2, 4, 4)),
    "attention": lambda: (Tokens(Attention()), (4,)),
    "encoder": lambda: (
        Tokens(nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)),
        (4,),
    ),
}


def make(name: str, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    net, shape = RULE_NETS[name]()
    return net.eval(), shape
