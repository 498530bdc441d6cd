"""A short training loop through vkla's forward and backward: a small gated linear attention
layer (projections, a data-dependent decay and an output projection) fitting a fixed teacher
of the same shape; the loss must fall to a small fraction of its start."""
import torch

import vkla.torch as vt


class GLALayer(torch.nn.Module):
    def __init__(self, d=16, heads=2, dk=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.h, self.dk = heads, dk
        self.qkv = torch.nn.Linear(d, 3 * heads * dk, bias=False)
        self.gate = torch.nn.Linear(d, heads)
        self.out = torch.nn.Linear(heads * dk, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.h, self.dk).unbind(2)
        g = torch.nn.functional.logsigmoid(self.gate(x)) / 4
        o, _ = vt.chunk_simple_gla(q, k, v, g=g)
        return self.out(o.reshape(B, T, -1))


def test_training_loss_falls():
    teacher, student = GLALayer(seed=1), GLALayer(seed=2)
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(3)
    losses = []
    for step in range(300):
        x = torch.randn(4, 32, 16, generator=gen)
        loss = torch.nn.functional.mse_loss(student(x), teacher(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert end < 0.1 * start, (start, end)
