"""In-context linear regression with linear self-attention (LSA) layers, trained on vkla.

SPEC section 6: sequences of n noisy examples (x_i, <w, x_i> + xi_i) and a query x_t; an
L-layer LSA model (FULL, DIAG or GD++ parametrisation) whose attention, forward and backward,
is LION-LIT with scale 1 and the query's key zeroed (`vkla.torch.lion`); Adam on fresh batches;
evaluation on fresh sequences against the oracle ridge regression that knows sigma_tau; the
baselines GD-1 (one step of gradient descent with the optimal step), ConstRR, AdaRR and TunedRR.

    /usr/bin/python3 -m vkla.icl --quick                 # a few small models, a few minutes
    /usr/bin/python3 -m vkla.icl --out docs/icl-results.jsonl          # the whole table
    /usr/bin/python3 -m vkla.icl --theory                # 1-layer models against the closed form
    /usr/bin/python3 -m vkla.icl --report docs/icl-results.jsonl --plot docs/icl.png

Every trained model and baseline is written as one JSON line as soon as it is done; a run
given an existing --out file skips what that file already holds, so an interrupted run resumes.
"""
import argparse
import json
import math
import os
import re
import sys
import time

import torch

MODELS = ("GD++", "DIAG", "FULL")
BASELINES = ("GD-1", "ConstRR", "AdaRR", "TunedRR")
EVAL_SEED = 1_000_003      # evaluation sequences: the same for every model and baseline
TUNE_SEED = 2_000_003      # the sequences the baselines' constants are tuned on


# ---------------------------------------------------------------------------------------------
# Data (SPEC section 6)

class Noise:
    """sigma_tau ~ U(0, sigma_max) ("U(0,2)") or uniform over a set ("{1,3}")."""

    def __init__(self, spec):
        spec = str(spec).replace(" ", "")
        m = re.fullmatch(r"U\(0,([0-9.]+)\)", spec)
        c = re.fullmatch(r"\{([0-9.,]+)\}", spec)
        if m:
            self.kind, self.values = "U", (float(m.group(1)),)
        elif c:
            self.kind, self.values = "C", tuple(float(s) for s in c.group(1).split(","))
        else:
            raise ValueError("noise %r: expected 'U(0,s)' or '{s1,s2,...}'" % spec)
        self.name = spec
        self.sigma_max = max(self.values)

    @classmethod
    def uniform(cls, sigma_max):
        return cls("U(0,%g)" % sigma_max)

    def mean_var(self):
        """E[sigma_tau^2]."""
        if self.kind == "U":
            return self.sigma_max ** 2 / 3
        return sum(s * s for s in self.values) / len(self.values)

    def sample(self, batch, gen):
        if self.kind == "U":
            return torch.rand(batch, generator=gen, dtype=torch.float64) * self.sigma_max
        idx = torch.randint(len(self.values), (batch,), generator=gen)
        return torch.tensor(self.values, dtype=torch.float64)[idx]


def sample(batch, noise, gen, d=10, n=20):
    """One batch of sequences: x [B, n+1, d] (the last row is the query), y [B, n+1] (the last
    entry the query's noiseless target), sigma [B]. float64."""
    w = torch.randn(batch, d, generator=gen, dtype=torch.float64)
    x = torch.randn(batch, n + 1, d, generator=gen, dtype=torch.float64)
    sigma = noise.sample(batch, gen)
    xi = torch.randn(batch, n, generator=gen, dtype=torch.float64) * sigma[:, None]
    y = torch.einsum("btd,bd->bt", x, w)
    y = torch.cat([y[:, :n] + xi, y[:, n:]], 1)
    return x, y, sigma


def tokens(x, y):
    """e_i = (x_i, y_i) for the context, (x_t, 0) for the query: [B, n+1, d+1]."""
    e = torch.cat([x, y[..., None]], -1)
    e[:, -1, -1] = 0
    return e


def batches(total, batch, noise, seed, d, n):
    """The same `total` sequences for a given seed, in batches (each batch its own generator,
    so a consumer may stop early or start again without storing them)."""
    done, i = 0, 0
    while done < total:
        b = min(batch, total - done)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        yield sample(b, noise, gen, d, n)
        done, i = done + b, i + 1


# ---------------------------------------------------------------------------------------------
# The LSA model

def attention_torch(q, k, v):
    """LION-LIT with scale 1 in plain PyTorch: o_i = sum_j (q_i . k_j) v_j. [B, T, D]."""
    return torch.bmm(torch.bmm(q, k.transpose(1, 2)), v)


def attention_vkla(q, k, v, form="attn"):
    """The same through vkla.torch.lion (float32 on the Vulkan device, forward and backward),
    several models sharing one call as heads: q, k, v are [B, T, H, D] or [B, T, D]."""
    from vkla.torch import lion
    squeeze = q.dim() == 3
    if squeeze:
        q, k, v = q[:, :, None], k[:, :, None], v[:, :, None]
    o = lion(q.float(), k.float(), v.float(), scale=1.0, normalize=False, form=form)
    o = o.to(q.dtype)
    return o[:, :, 0] if squeeze else o


class LSA(torch.nn.Module):
    """L layers of e_i <- e_i + sum_j (e_j^T Q e_i) P e_j over the context tokens j (the query's
    key zeroed), y_hat = -(last component of the query token)."""

    def __init__(self, param, layers, d=10, init_std=None, seed=0, backend="vkla",
                 form="attn", dtype=torch.float64):
        super().__init__()
        if param not in MODELS:
            raise ValueError("parametrisation %r: one of %s" % (param, ", ".join(MODELS)))
        self.param, self.layers, self.d, self.backend, self.form = param, layers, d, backend, form
        gen = torch.Generator().manual_seed(seed)
        std = init_std if init_std is not None else (0.01 if param == "FULL" else 0.1)

        def init(*shape):
            return torch.nn.Parameter(torch.randn(*shape, generator=gen, dtype=dtype) * std)
        if param == "FULL":
            self.P, self.Q = init(layers, d + 1, d + 1), init(layers, d + 1, d + 1)
        else:   # DIAG: (p_x, p_y), (q_x, q_y); GD++: q_y = 0
            self.p, self.q = init(layers, 2), init(layers, 2 if param == "DIAG" else 1)
            if param == "DIAG":
                # DIAG starts where GD++ starts (q_y = 0) and learns q_y from there. With a
                # random q_y the y-y term scales the y components by about 1 + q_y p_y
                # sum_j y_j^2 per layer (sum_j y_j^2 ~ n (d + sigma^2) > 200), and a 4-layer
                # stack started there trains to a loss about 10x GD++'s with spikes up to 1e15.
                with torch.no_grad():
                    self.q[:, 1] = 0

    def _diagonal(self, pair):
        """The d+1 diagonal entries of a DIAG or GD++ P or Q from its (x, y) pair (GD++'s Q has
        no y entry: 0)."""
        y = pair[1:2] if pair.numel() > 1 else pair.new_zeros(1)
        return torch.cat([pair[0:1].expand(self.d), y])

    def weights(self, layer):
        """(P, Q) of one layer as (d+1) x (d+1) matrices."""
        if self.param == "FULL":
            return self.P[layer], self.Q[layer]
        return (torch.diag(self._diagonal(self.p[layer])),
                torch.diag(self._diagonal(self.q[layer])))

    def project(self, e, layer):
        """(q, v) = (e Q^T, e P^T) for tokens e [..., d+1] in e's dtype: a diagonal P or Q is an
        elementwise product, a full one F.linear (this PyTorch's BLAS is slow at K = 11)."""
        if self.param == "FULL":
            P, Q = self.P[layer].to(e.dtype), self.Q[layer].to(e.dtype)
            return torch.nn.functional.linear(e, Q), torch.nn.functional.linear(e, P)
        return (e * self._diagonal(self.q[layer]).to(e.dtype),
                e * self._diagonal(self.p[layer]).to(e.dtype))

    def qkv(self, e, layer):
        P, Q = self.weights(layer)
        mask = torch.ones(e.shape[1], 1, dtype=e.dtype)
        mask[-1] = 0
        return e @ Q.T, e * mask, e @ P.T

    def forward(self, e):
        for layer in range(self.layers):
            q, k, v = self.qkv(e, layer)
            if self.backend == "vkla":
                o = attention_vkla(q, k, v, self.form)
            else:
                o = attention_torch(q, k, v)
            e = e + o
        return -e[:, -1, -1]


class Group(torch.nn.Module):
    """Several LSA models of the same depth trained side by side: each layer's attention of all
    of them is one vkla call, one model per head. Each model sees its own data."""

    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.layers = models[0].layers
        assert all(m.layers == self.layers for m in models)

    def forward(self, es):
        """es: [H, B, T, d+1] (one batch per model) -> predictions [H, B]."""
        if self.models[0].backend == "vkla":
            return self._forward_vkla(es)
        es = list(es)
        for layer in range(self.layers):
            os_ = [attention_torch(*m.qkv(e, layer)) for m, e in zip(self.models, es)]
            es = [e + o for e, o in zip(es, os_)]
        return torch.stack([-e[:, -1, -1] for e in es])

    def _forward_vkla(self, es):
        """The models' tokens stay one [H, B, T, d+1] block: per layer, each model projects its
        part (LSA.project), and the LION call reads q, k, v and writes o as the [B, T, H, d+1]
        permuted views of such blocks (no per-model slices or copies around the call)."""
        H, B, T, D = es.shape
        mask = torch.ones(T, 1, dtype=es.dtype)
        mask[-1] = 0
        e = es.contiguous()
        for layer in range(self.layers):
            ef = e.to(torch.float32)
            qv = [m.project(ef[h], layer) for h, m in enumerate(self.models)]
            q = torch.stack([t[0] for t in qv])
            v = torch.stack([t[1] for t in qv])
            k = ef * mask.to(torch.float32)
            o = attention_vkla(*(t.permute(1, 2, 0, 3) for t in (q, k, v)), self.models[0].form)
            e = e + o.permute(2, 0, 1, 3).to(e.dtype)
        return -e[:, :, -1, -1]


# ---------------------------------------------------------------------------------------------
# Training and evaluation

def lr_at(step, steps, lr, warmup):
    """Linear warm-up over `warmup` steps, then cosine decay to zero."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * t))


def train(models, noises, steps, batch=2048, lr=1e-3, seed=0, warmup=None, clip=None,
          d=10, n=20, progress=None, desc="train"):
    """Adam on fresh batches for each model (one Group call per step: the models' attention
    shares one vkla call). Returns the per-step training losses, [steps, len(models)]."""
    group = Group(models)
    opt = torch.optim.Adam(group.parameters(), lr=lr)
    gens = [torch.Generator().manual_seed(seed * 7919 + 17 * i + 1) for i in range(len(models))]
    warmup = max(1, steps // 20) if warmup is None else warmup
    history = []
    bar = _bar(steps, desc) if progress else None
    for step in range(steps):
        data = [sample(batch, nz, g, d, n) for nz, g in zip(noises, gens)]
        es = torch.stack([tokens(x, y) for x, y, _ in data])
        target = torch.stack([y[:, -1] for _, y, _ in data])
        pred = group(es)
        losses = 0.5 * ((pred - target) ** 2).mean(1)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        opt.zero_grad()
        losses.sum().backward()
        if clip:
            for m in models:
                torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
        opt.step()
        history.append([float(v) for v in losses.detach()])
        if bar:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=" ".join("%.3f" % v for v in history[-1]))
    if bar:
        bar.close()
    return history


def _bar(total, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def ridge_parts(x, y):
    """Per sequence: eigenvalues of X^T X, (U^T x_t), (U^T X^T y), so that the ridge prediction
    for any lambda is sum(a * b / (ev + lambda)); also the OLS residual sum of squares."""
    X, yc, xt = x[:, :-1], y[:, :-1], x[:, -1]
    ev, U = torch.linalg.eigh(X.transpose(1, 2) @ X)
    xty = torch.einsum("bnd,bn->bd", X, yc)
    a = torch.einsum("bdk,bd->bk", U, xt)
    b = torch.einsum("bdk,bd->bk", U, xty)
    w_ols = torch.einsum("bdk,bk->bd", U, b / ev)
    rss = ((yc - torch.einsum("bnd,bd->bn", X, w_ols)) ** 2).sum(1)
    return ev, a, b, rss, xty


def ridge_predict(parts, lam):
    ev, a, b = parts[:3]
    return (a * b / (ev + lam[:, None])).sum(1)


def _sq(pred, target):
    return 0.5 * (pred - target) ** 2


def adaptive_lambda(parts, n, d):
    """AdaRR: the noise variance estimated from the OLS residuals."""
    return parts[3] / (n - d)


def tune_baselines(noise, sequences, batch, d, n):
    """ConstRR's lambda and TunedRR's (factor, cap), by grid search then refinement on
    sequences separate from the evaluation ones."""
    parts, targets = [], []
    for x, y, _ in batches(sequences, batch, noise, TUNE_SEED, d, n):
        parts.append(ridge_parts(x, y))
        targets.append(y[:, -1])
    parts = [torch.cat([p[i] for p in parts]) for i in range(5)]
    target = torch.cat(targets)
    ada = adaptive_lambda(parts, n, d)

    def const_loss(lam):
        return float(_sq(ridge_predict(parts, torch.full_like(target, lam)), target).mean())

    def tuned_loss(f, cap):
        return float(_sq(ridge_predict(parts, torch.clamp(ada * f, max=cap)), target).mean())

    grid = [0.0] + [10 ** (e / 8) for e in range(-24, 25)]
    lam = min(grid, key=const_loss)
    lam = _refine1(const_loss, lam)
    fs = [0.25 * i for i in range(1, 13)]
    caps = [10 ** (e / 4) for e in range(-8, 9)] + [float("inf")]
    f, cap = min(((f, c) for f in fs for c in caps), key=lambda fc: tuned_loss(*fc))
    for _ in range(3):    # coordinate refinement
        f = _refine1(lambda v: tuned_loss(v, cap), f)
        if math.isfinite(cap):
            cap = _refine1(lambda v: tuned_loss(f, v), cap)
    return {"ConstRR": {"lambda": lam}, "TunedRR": {"factor": f, "cap": cap}}


def _refine1(fn, x0, rounds=30):
    """Golden-section search of fn on [x0 / 2, x0 * 2] (x0 = 0: [0, 0.01])."""
    lo, hi = (x0 / 2, x0 * 2) if x0 > 0 else (0.0, 0.01)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = fn(a), fn(b)
    for _ in range(rounds):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = fn(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = fn(b)
    best = min((fa, a), (fb, b), (fn(x0), x0))
    return best[1]


def evaluate(predictors, noise, sequences, batch, d, n, progress=None, desc="eval",
             group=None):
    """Mean loss of each predictor (a function x, y, sigma, parts -> y_hat) and of the oracle
    ridge regression on the evaluation sequences; `group`, a Group of trained models, adds
    their losses under the keys 0, 1, ... (one call per layer for all of them). Returns
    ({name: loss}, oracle_loss)."""
    sums = {k: 0.0 for k in predictors}
    if group is not None:
        sums.update({i: 0.0 for i in range(len(group.models))})
    oracle, count = 0.0, 0
    bar = _bar(sequences, desc) if progress else None
    with torch.no_grad():
        for x, y, sigma in batches(sequences, batch, noise, EVAL_SEED, d, n):
            parts = ridge_parts(x, y)
            target = y[:, -1]
            oracle += float(_sq(ridge_predict(parts, sigma ** 2), target).sum())
            for k, fn in predictors.items():
                sums[k] += float(_sq(fn(x, y, sigma, parts), target).sum())
            if group is not None:
                e = tokens(x, y)
                pred = group(e[None].expand(len(group.models), *e.shape))
                for i in range(len(group.models)):
                    sums[i] += float(_sq(pred[i], target).sum())
            count += len(target)
            if bar:
                bar.update(len(target))
    if bar:
        bar.close()
    return {k: v / count for k, v in sums.items()}, oracle / count


def baseline_predictors(noise, tuned, d, n):
    eta = 1.0 / (n + d + 1 + noise.mean_var())
    preds = {
        "GD-1": lambda x, y, s, p: eta * (p[4] * x[:, -1]).sum(1),
        "AdaRR": lambda x, y, s, p: ridge_predict(p, adaptive_lambda(p, n, d)),
    }
    if tuned:
        lam, f, cap = (tuned["ConstRR"]["lambda"], tuned["TunedRR"]["factor"],
                       tuned["TunedRR"]["cap"])
        preds["ConstRR"] = lambda x, y, s, p: ridge_predict(p, torch.full_like(s, lam))
        preds["TunedRR"] = lambda x, y, s, p: ridge_predict(
            p, torch.clamp(adaptive_lambda(p, n, d) * f, max=cap))
    return preds, {"GD-1": {"eta": eta}}


def theory_loss(noise, d=10, n=20):
    """SPEC 6: the expected loss of the best single layer (one step of GD with the best eta)."""
    s2 = noise.mean_var()
    return 0.5 * d * (d + 1 + s2) / (n + d + 1 + s2)


# ---------------------------------------------------------------------------------------------
# The command

def _key(r):
    return (r["model"], r["layers"], r["noise"], r.get("seed"), r.get("steps"))


def load_results(path):
    out = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def _write(path, rec):
    line = json.dumps(rec, sort_keys=False)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    print(line, flush=True)


def _baseline_records(opt, noise, todo):
    """Tune (on their own sequences), evaluate and describe the baselines in todo."""
    d, n, t0 = opt.d, opt.n, time.time()
    progress = not opt.no_progress
    tuned = (tune_baselines(noise, opt.tune_sequences, opt.eval_batch, d, n)
             if {"ConstRR", "TunedRR"} & set(todo) else None)
    preds, info = baseline_predictors(noise, tuned, d, n)
    preds = {k: v for k, v in preds.items() if k in todo}
    losses, oracle = evaluate(preds, noise, opt.eval_sequences, opt.eval_batch, d, n,
                              progress, "baselines %s" % noise.name)
    info.update(tuned or {})
    return [dict(model=b, layers=0, noise=noise.name, sigma_max=noise.sigma_max,
                 eval_sequences=opt.eval_sequences, loss=losses[b],
                 adjusted_loss=losses[b] - oracle, oracle_loss=oracle, steps=0, seed=None,
                 params=info.get(b), seconds=round(time.time() - t0, 2)) for b in todo]


def _trained_records(opt, noise, layers, seed, todo):
    """Train the models in todo (one depth and seed, side by side: one vkla call per layer and
    direction for all of them), evaluate them, and describe them."""
    d, n, t0 = opt.d, opt.n, time.time()
    progress = not opt.no_progress
    models = [LSA(m, layers, d, seed=seed, backend=opt.backend, form=opt.form) for m in todo]
    hist = train(models, [noise] * len(models), opt.steps, opt.batch, opt.lr, seed,
                 clip=opt.clip, d=d, n=n, progress=progress,
                 desc="L=%d %s seed %d" % (layers, noise.name, seed))
    t_train = time.time() - t0
    losses, oracle = evaluate({}, noise, opt.eval_sequences, opt.eval_batch, d, n, progress,
                              "eval L=%d %s" % (layers, noise.name), group=Group(models))
    out = []
    for i, m in enumerate(todo):
        final = [h[i] for h in hist[-max(1, len(hist) // 20):]]
        out.append(dict(model=m, layers=layers, noise=noise.name, sigma_max=noise.sigma_max,
                        eval_sequences=opt.eval_sequences, loss=losses[i],
                        adjusted_loss=losses[i] - oracle, oracle_loss=oracle, steps=opt.steps,
                        seed=seed, batch=opt.batch, lr=opt.lr, clip=opt.clip,
                        schedule="warmup %d, cosine to 0" % max(1, opt.steps // 20),
                        train_loss_end=sum(final) / len(final), backend=opt.backend,
                        models_per_call=len(models), train_seconds=round(t_train, 1),
                        seconds=round(time.time() - t0, 1)))
    return out


def _run_task(opt, task):
    """One unit of a table run (also the body of a --jobs worker process)."""
    if task[0] == "baselines":
        return _baseline_records(opt, Noise(task[1]), task[2])
    return _trained_records(opt, Noise(task[1]), *task[2:])


def _worker_init(threads):
    if threads > 0:
        torch.set_num_threads(threads)
    _keep_freed_memory()


def table_tasks(opt, done):
    """What a table run still has to do, given the keys of the records it already holds:
    ("baselines", noise, [names]) and ("train", noise, layers, seed, [models])."""
    noises = [Noise(s) for s in opt.noise] + [Noise.uniform(s) for s in opt.sigma_max]
    tasks = []
    for noise in noises:
        todo_b = [b for b in opt.baselines if (b, 0, noise.name, None, 0) not in done]
        if todo_b:
            tasks.append(("baselines", noise.name, todo_b))
        for layers in opt.layers:
            for seed in opt.seeds:
                todo = [m for m in opt.models
                        if (m, layers, noise.name, seed, opt.steps) not in done]
                if todo:
                    tasks.append(("train", noise.name, layers, seed, todo))
    return tasks


def run_table(opt):
    """Every missing record of the table, written as each task finishes. With --jobs N > 1 the
    tasks run in N worker processes (each its own vkla context), deepest models first."""
    done = {_key(r) for r in load_results(opt.out)}
    tasks = table_tasks(opt, done)
    if opt.jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            for rec in _run_task(opt, task):
                _write(opt.out, rec)
        return
    import concurrent.futures
    import copy
    import multiprocessing
    tasks.sort(key=lambda t: -(t[2] * len(t[4]) if t[0] == "train" else 0))
    wopt = copy.copy(opt)
    wopt.no_progress = True   # the workers' bars would interleave: one bar over the tasks here
    bar = _bar(len(tasks), "tasks (%d jobs)" % opt.jobs) if not opt.no_progress else None
    ctx = multiprocessing.get_context("spawn")   # no Vulkan or thread state crosses a fork
    with concurrent.futures.ProcessPoolExecutor(opt.jobs, mp_context=ctx,
                                                initializer=_worker_init,
                                                initargs=(opt.threads,)) as pool:
        futures = [pool.submit(_run_task, wopt, t) for t in tasks]
        for fut in concurrent.futures.as_completed(futures):
            for rec in fut.result():
                _write(opt.out, rec)
            if bar:
                bar.update(1)
    if bar:
        bar.close()


def _diverged(r):
    """A trained model whose evaluation loss is non-finite or above 1000 (the zero predictor's is
    d / 2): training left the stable region and did not come back."""
    return bool(r.get("diverged")) or not math.isfinite(r["loss"]) or r["loss"] > 1e3


def report(path, plot=None):
    """The table of adjusted losses as markdown (per cell the best non-diverged record over the
    seeds and runs the file holds, marked where its seed or learning rate is not the file's
    usual one), the 1-layer models against SPEC 6's closed form, and optionally the plot."""
    rows = load_results(path)
    trained = [r for r in rows if r["layers"] > 0]
    usual = {}
    for r in trained:
        usual[(r.get("seed"), r.get("lr"))] = usual.get((r.get("seed"), r.get("lr")), 0) + 1
    usual = max(usual, key=usual.get) if usual else None
    best, div = {}, {}
    for r in rows:
        k = (r["model"], r["layers"], r["noise"])
        if r["layers"] > 0 and _diverged(r):
            div[k] = r
            continue
        if k not in best or r["adjusted_loss"] < best[k]["adjusted_loss"]:
            best[k] = r
    noises = sorted({r["noise"] for r in rows}, key=lambda s: (s[0] != "U", Noise(s).sigma_max))
    layers = sorted({r["layers"] for r in rows if r["layers"] > 0})
    marks = {}

    def cell(k):
        if k in best:
            r = best[k]
            if r["layers"] > 0 and (r.get("seed"), r.get("lr")) != usual:
                marks[(r.get("seed"), r.get("lr"))] = True
                return "%.4f *" % r["adjusted_loss"]
            return "%.4f" % r["adjusted_loss"]
        return "diverged" if k in div else "-"
    lines = ["| model | " + " | ".join(noises) + " |", "|---" * (len(noises) + 1) + "|"]
    for m in MODELS:
        for L in layers:
            cells = [cell((m, L, s)) for s in noises]
            if any(c != "-" for c in cells):
                lines.append("| %s L=%d | " % (m, L) + " | ".join(cells) + " |")
    for b in BASELINES:
        cells = [cell((b, 0, s)) for s in noises]
        if any(c != "-" for c in cells):
            lines.append("| %s | " % b + " | ".join(cells) + " |")
    if usual is not None:
        lines.append("")
        lines.append("Trained models: seed %s, peak lr %g unless marked" % usual)
        for seed, lr in sorted(marks, key=str):
            lines.append("* seed %s, peak lr %g (the run with seed %s, lr %g diverged or did "
                         "worse)" % (seed, lr, usual[0], usual[1]))
        if div:
            lines.append("Diverged (evaluation loss above 1000): " + ", ".join(
                "%s L=%d %s (seed %s, lr %g)" % (k[0], k[1], k[2], r.get("seed"), r.get("lr"))
                for k, r in sorted(div.items(), key=lambda kv: str(kv[0]))))
    # the theory check of SPEC 6 on the table's 1-layer models
    th = [(k, r) for k, r in sorted(best.items(), key=lambda kv: str(kv[0]))
          if k[1] == 1 and k[2].startswith("U(")]
    if th:
        lines += ["", "| 1 layer | noise | loss | closed form | relative |", "|---|---|---:|---:|---:|"]
        for (m, _, nz), r in th:
            t = theory_loss(Noise(nz))
            lines.append("| %s | %s | %.4f | %.4f | %+.2f%% |" % (m, nz, r["loss"], t,
                                                                 100 * (r["loss"] / t - 1)))
    text = "\n".join(lines)
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(noises), figsize=(3.2 * len(noises), 3.4), squeeze=False)
        for ax, s in zip(axes[0], noises):
            for m in MODELS:
                pts = [(L, best[(m, L, s)]["adjusted_loss"]) for L in layers if (m, L, s) in best]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=m)
            for b, style, color in (("GD-1", ":", "black"), ("ConstRR", ":", "gray"),
                                    ("AdaRR", "-.", "gray"), ("TunedRR", "--", "gray")):
                if (b, 0, s) in best and best[(b, 0, s)]["adjusted_loss"] > 0:
                    ax.axhline(best[(b, 0, s)]["adjusted_loss"], ls=style, color=color,
                               lw=1, label=b)
            ax.set_yscale("log")
            ax.set_title("sigma ~ %s" % s)
            ax.set_xlabel("layers")
            ax.set_xticks(layers)
        axes[0][0].set_ylabel("adjusted loss (log scale)")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        plt.close(fig)
    return text


def theory_check(opt):
    """1-layer models of each parametrisation at sigma_max 0, 2, 4 against the closed form."""
    d, n = opt.d, opt.n
    sig = opt.sigma_max or [0.0, 2.0, 4.0]
    noises = [Noise.uniform(s) for s in sig]
    models, nz = [], []
    for noise in noises:
        for m in opt.models:
            models.append(LSA(m, 1, d, seed=opt.seeds[0], backend=opt.backend, form=opt.form))
            nz.append(noise)
    t0 = time.time()
    train(models, nz, opt.steps, opt.batch, opt.lr, opt.seeds[0], clip=opt.clip, d=d, n=n,
          progress=not opt.no_progress, desc="theory")
    t_train = time.time() - t0
    worst, out = 0.0, []
    for noise in noises:
        idx = [i for i, z in enumerate(nz) if z is noise]
        gd, _ = baseline_predictors(noise, None, d, n)
        losses, _ = evaluate({"GD-1": gd["GD-1"]}, noise, opt.eval_sequences, opt.eval_batch,
                             d, n, not opt.no_progress, "eval %s" % noise.name,
                             group=Group([models[i] for i in idx]))
        th = theory_loss(noise, d, n)
        for j, i in enumerate(idx):
            rel = losses[j] / th - 1
            worst = max(worst, abs(rel))
            rec = dict(model=models[i].param, layers=1, noise=noise.name,
                       sigma_max=noise.sigma_max, loss=losses[j], theory=th, rel=rel,
                       gd1_empirical=losses["GD-1"], vs_gd1=losses[j] / losses["GD-1"] - 1,
                       eval_sequences=opt.eval_sequences, steps=opt.steps,
                       seed=opt.seeds[0], train_seconds=round(t_train, 1))
            out.append(rec)
            _write(opt.out, rec)
    print("theory check: worst relative difference %.4f (limit 0.015)" % worst, flush=True)
    return out, worst


def _timed(fn, reps):
    """Median wall and process CPU time (every thread, the device's included on a CPU Vulkan
    driver) of `reps` calls of fn after one warm-up call, in ms."""
    wall, cpu = [], []
    for r in range(reps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = lambda xs: 1e3 * sorted(xs[1:])[len(xs[1:]) // 2]  # noqa: E731
    return med(wall), med(cpu)


def bench(opt):
    """Time one training step (forward and backward) of an L-layer model at the given batch
    (the first of --models alone, and GD++, DIAG and FULL side by side as the table trains
    them), and the vkla LION calls alone at that shape (one forward and one backward)."""
    from vkla.torch import lion
    d, n, B, reps = opt.d, opt.n, opt.batch, opt.steps
    noise = Noise.uniform(1)
    gen = torch.Generator().manual_seed(0)
    out = []
    for layers in opt.layers:
        rec = {"layers": layers, "batch": B, "reps": reps, "threads": torch.get_num_threads()}
        for backend in ("vkla", "torch"):
            for name, params in (("step", opt.models[:1]), ("group3_step", MODELS)):
                group = Group([LSA(p, layers, d, backend=backend, form=opt.form)
                               for p in params])
                adam = torch.optim.Adam(group.parameters(), lr=1e-4)

                def step():
                    data = [sample(B, noise, gen, d, n) for _ in params]
                    pred = group(torch.stack([tokens(x, y) for x, y, _ in data]))
                    target = torch.stack([y[:, -1] for _, y, _ in data])
                    adam.zero_grad()
                    (0.5 * ((pred - target) ** 2).mean(1).sum()).backward()
                    adam.step()
                w, c = _timed(step, reps)
                rec["%s_ms_%s" % (name, backend)] = round(w, 1)
                rec["%s_cpu_ms_%s" % (name, backend)] = round(c, 1)
        for H in (1, 3):
            q, k, v = (torch.randn(B, n + 1, H, d + 1, requires_grad=True) for _ in range(3))
            keep = {}

            def fwd():
                keep["o"] = lion(q, k, v, scale=1.0, form=opt.form)

            def bwd():
                fwd()
                keep["o"].backward(torch.ones_like(keep["o"]))
            fw, fc = _timed(fwd, reps)
            bw, bc = _timed(bwd, reps)
            rec["lion_h%d_fwd_ms" % H], rec["lion_h%d_fwd_cpu_ms" % H] = round(fw, 1), round(fc, 1)
            rec["lion_h%d_bwd_ms" % H] = round(bw - fw, 1)
            rec["lion_h%d_bwd_cpu_ms" % H] = round(bc - fc, 1)
        rec["steps_per_s"] = round(1e3 / rec["step_ms_vkla"], 2)
        rec["group3_steps_per_s"] = round(1e3 / rec["group3_step_ms_vkla"], 2)
        out.append(rec)
        print(json.dumps(rec), flush=True)
    return out


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m vkla.icl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)

    def floats(s):
        return [float(v) for v in s.split(",") if v != ""]

    def ints(s):
        return [int(v) for v in s.split(",") if v != ""]

    def names(s):
        return [v for v in s.split(",") if v != ""]
    ap.add_argument("--out", help="JSON lines file (appended; what it holds is skipped)")
    ap.add_argument("--models", type=names, default=list(MODELS))
    ap.add_argument("--baselines", type=names, default=list(BASELINES))
    ap.add_argument("--layers", type=ints, default=[1, 2, 3, 4])
    ap.add_argument("--sigma-max", type=floats, default=None,
                    help="sigma_tau ~ U(0, s) for each s (default 0,1,2,3,4)")
    ap.add_argument("--noise", action="append", default=[],
                    help="categorical noise such as '{1,3}' (repeatable)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=None, help="Adam's peak learning rate")
    ap.add_argument("--clip", type=float, default=None, help="gradient norm clip per model")
    ap.add_argument("--seeds", type=ints, default=[0])
    ap.add_argument("--eval-sequences", type=int, default=100_000)
    ap.add_argument("--tune-sequences", type=int, default=100_000)
    ap.add_argument("--eval-batch", type=int, default=8192)
    ap.add_argument("-d", type=int, default=10)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--backend", choices=("vkla", "torch"), default="vkla",
                    help="attention on the Vulkan device (vkla) or in plain PyTorch float64")
    ap.add_argument("--form", choices=("attn", "chunk", "rnn"), default="attn",
                    help="the vkla LION form")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1-layer models at sigma_max 1, short training, "
                         "16384 evaluation sequences")
    ap.add_argument("--theory", action="store_true",
                    help="1-layer models at sigma_max 0, 2, 4 against SPEC 6's closed form")
    ap.add_argument("--bench", action="store_true",
                    help="time a training step for each --layers (median of --steps steps) and "
                         "the LION calls alone")
    ap.add_argument("--report", metavar="JSONL", help="print the table of a results file")
    ap.add_argument("--plot", metavar="PNG", help="with --report: the plot")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="run the table's trainings in this many worker processes (a CPU "
                         "device such as lavapipe leaves cores idle while the host part runs)")
    ap.add_argument("--threads", type=int, default=1,
                    help="PyTorch intra-op threads for the host part (default 1: its operations "
                         "are small here, and a thread pool contends with the CPU threads of a "
                         "CPU Vulkan device such as lavapipe)")
    opt = ap.parse_args(argv)
    if opt.quick:
        opt.layers = [1]
        opt.sigma_max = opt.sigma_max or [1.0]
        opt.steps, opt.batch = 80, 256
        opt.eval_sequences, opt.tune_sequences = 16384, 16384
    if opt.sigma_max is None:
        opt.sigma_max = [] if (opt.noise or opt.theory) else [0.0, 1.0, 2.0, 3.0, 4.0]
    if opt.lr is None:
        opt.lr = 2e-2 if opt.quick else 2e-3
    for m in opt.models:
        if m not in MODELS:
            ap.error("--models: %r is not one of %s" % (m, ", ".join(MODELS)))
    for b in opt.baselines:
        if b not in BASELINES:
            ap.error("--baselines: %r is not one of %s" % (b, ", ".join(BASELINES)))
    return opt


def _keep_freed_memory():
    """glibc serves blocks above 128 KiB to 32 MiB with fresh mmaps and returns them on free, so
    every new multi-MB tensor (outputs, gradients) page-faults all its pages again: 45 ms for
    5.6 MB on a loaded VM, against 0.07 ms for reused memory. Raise both thresholds."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD: its maximum
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv=None):
    opt = parse(argv)
    if opt.threads > 0:
        torch.set_num_threads(opt.threads)
    _keep_freed_memory()
    if opt.report:
        print(report(opt.report, opt.plot))
        return 0
    if opt.bench:
        bench(opt)
        return 0
    if opt.theory:
        _, worst = theory_check(opt)
        return 0 if worst <= 0.015 else 1
    run_table(opt)
    if opt.out:
        print(report(opt.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
