/* Backward pass of lion (SPEC section 4): argument checks, scratch layout, and the chunkwise
 * gradient kernels. The math is in docs/lion.md ("Backward") and the kernels' headers.
 *
 * Every gradient is a LION-like product out_i = scale sum_j (x_i . y_j) M'_ij w_j, computed by
 * the forward's own chunk kernels (chunk_state + chunk_output) on packed f32 rows:
 *   dq = product(x = do', y = v', w = k,  M),    dk = product(x = v', y = do', w = q,  M^T),
 *   dv = product(x = k,   y = q,  w = do', M^T)  (its last column, under normalize, dropped),
 * with v' = v and do' = dout, or under normalize v' = [v, 1] and do' the gradient of the
 * augmented output (bwd_prep.comp, after one forward product for o and the denominators).
 * The log-decay gradients come from per-token terms (bwd_gate.comp, which reads the states of
 * the dq and dk products) and a reverse cumulative sum per sequence (bwd_dg.comp). */
#include "lion_common.h"

#include <stdlib.h>
#include <string.h>

#define OP "lion_backward"
#define TILE LION_TILE
#define FLOAT_DTYPES ((1u << VKLA_DTYPE_F32) | (1u << VKLA_DTYPE_F16) | (1u << VKLA_DTYPE_BF16))

/* bwd_dg.comp's output switches (push word W_CFG) */
enum { DG_OUT = 1 << 16, DG_PARTIAL = 1 << 17, DG_FINAL = 1 << 18 };

/* scratch regions: packed rows [B,T,H,X] and the states of the products */
enum { R_Q, R_K, R_V, R_DO, R_DQ, R_DK, R_DV, R_ND, R_SQ, R_DKS, R_PAIRS, R_PART, R_COUNT };

typedef struct bplan {
    vkla_lion_dims d;
    uint32_t Kp, Vx, Xv;    /* K rounded up to 4; value width (+1 with normalize), rounded */
    bool gate;              /* dg or dg_gamma requested */
    uint64_t off_seq, off_chunk;
    uint64_t off[R_COUNT];  /* UINT64_MAX = region not used */
    uint64_t scratch_bytes;
} bplan;

/* Element strides of a view, and the byte span [lo, hi) it touches in its VkBuffer. */
static void span(const vkla_tensor *t, uint64_t *st, uint64_t *lo, uint64_t *hi)
{
    vkla__tensor_strides(t, st);
    uint64_t last = 0;
    for (uint32_t i = 0; i < t->ndim; i++)
        last += (t->shape[i] - 1) * st[i];
    *lo = t->buffer->base + t->offset;
    *hi = *lo + (last + 1) * vkla_dtype_size(t->dtype);
}

/* Whether two (checked) views share a byte. Views whose spans overlap can still be disjoint
 * when their rows interleave (q, k, v or their gradients as column ranges of one fused
 * buffer): that holds when every outer stride of both is a multiple of one period P (bytes)
 * and the rows' byte ranges modulo P do not meet. */
static bool views_overlap(const vkla_tensor *a, const vkla_tensor *b)
{
    if (!a->buffer || !b->buffer || a->buffer->buffer != b->buffer->buffer)
        return false;
    uint64_t sa[VKLA_MAX_DIMS], sb[VKLA_MAX_DIMS], alo, ahi, blo, bhi;
    span(a, sa, &alo, &ahi);
    span(b, sb, &blo, &bhi);
    if (ahi <= blo || bhi <= alo)
        return false;
    const vkla_tensor *ts[2] = {a, b};
    const uint64_t *ss[2] = {sa, sb};
    uint64_t P = 0;
    for (int v = 0; v < 2; v++)
        for (uint32_t i = 0; i + 1 < ts[v]->ndim; i++) {
            uint64_t s = ss[v][i] * vkla_dtype_size(ts[v]->dtype);
            if (ts[v]->shape[i] > 1 && (P == 0 || s < P))
                P = s;
        }
    if (P == 0)
        return true;
    for (int v = 0; v < 2; v++) {
        for (uint32_t i = 0; i + 1 < ts[v]->ndim; i++)
            if (ts[v]->shape[i] > 1 && (ss[v][i] * vkla_dtype_size(ts[v]->dtype)) % P)
                return true;
        if (ts[v]->shape[ts[v]->ndim - 1] * vkla_dtype_size(ts[v]->dtype) > P)
            return true;
    }
    uint64_t ra = a->shape[a->ndim - 1] * vkla_dtype_size(a->dtype);
    uint64_t rb = b->shape[b->ndim - 1] * vkla_dtype_size(b->dtype);
    uint64_t pa = alo % P, pb = blo % P;
    return (pb + P - pa) % P < ra || (pa + P - pb) % P < rb;
}

static vkla_result check_grads(vkla_context *ctx, const vkla_lion_backward_args *a,
                               const vkla_lion_dims *d)
{
    const vkla_lion_args *f = &a->fwd;
    uint64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    uint64_t sg[3] = {d->B, d->T, d->H}, sgam[1] = {d->H};
    const uint32_t dt = 1u << d->dtype;
    vkla_result r;
    if ((r = vkla__check_tensor(ctx, OP, "dout", &a->dout, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if (a->dout.dtype != d->dtype)
        return vkla__fail(ctx, VKLA_ERROR_DTYPE_MISMATCH, OP ": dout is %s but q is %s",
                          vkla_dtype_name(a->dout.dtype), vkla_dtype_name(d->dtype));
    const struct {
        const char *name;
        const vkla_tensor *t;
        const uint64_t *shape;
    } gr[3] = {{"dq", &a->dq, sk}, {"dk", &a->dk, sk}, {"dv", &a->dv, sv}};
    for (int i = 0; i < 3; i++) {
        if (!gr[i].t->buffer)
            continue;
        r = vkla__check_tensor(ctx, OP, gr[i].name, gr[i].t, 4, gr[i].shape, FLOAT_DTYPES);
        if (r != VKLA_SUCCESS)
            return r;
        if (!(dt & (1u << gr[i].t->dtype)))
            return vkla__fail(ctx, VKLA_ERROR_DTYPE_MISMATCH, OP ": %s is %s but q is %s",
                              gr[i].name, vkla_dtype_name(gr[i].t->dtype),
                              vkla_dtype_name(d->dtype));
    }
    if (a->dg.buffer && !f->g.buffer)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          OP ": dg is given but the forward has no g");
    if (a->dg_gamma.buffer && !f->g_gamma.buffer)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          OP ": dg_gamma is given but the forward has no g_gamma");
    uint32_t unused = 0;
    if ((r = vkla__check_f32_opt(ctx, OP, "dg", &a->dg, 3, sg, 1, &unused)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "dg_gamma", &a->dg_gamma, 1, sgam, 1, &unused)) !=
            VKLA_SUCCESS)
        return r;

    /* no gradient may share memory with another gradient, dout or an input */
    const struct {
        const char *name;
        const vkla_tensor *t;
    } all[] = {{"dq", &a->dq},     {"dk", &a->dk}, {"dv", &a->dv}, {"dg", &a->dg},
               {"dg_gamma", &a->dg_gamma}, {"dout", &a->dout}, {"q", &f->q},
               {"k", &f->k},       {"v", &f->v},   {"g", &f->g},   {"g_gamma", &f->g_gamma}};
    const int ngrad = 5, nall = (int)(sizeof(all) / sizeof(all[0]));
    for (int i = 0; i < ngrad; i++)
        for (int j = i + 1; j < nall; j++)
            if (views_overlap(all[i].t, all[j].t))
                return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                                  OP ": %s overlaps %s; gradients need memory of their own",
                                  all[i].name, all[j].name);
    return VKLA_SUCCESS;
}

static vkla_result make_plan(vkla_context *ctx, const vkla_lion_backward_args *a, bplan *p)
{
    memset(p, 0, sizeof(*p));
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!a)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": args is NULL");
    vkla_result r = vkla__lion_check(ctx, OP, &a->fwd, false, &p->d);
    if (r != VKLA_SUCCESS)
        return r;
    if ((r = check_grads(ctx, a, &p->d)) != VKLA_SUCCESS) {
        vkla__seqs_free(&p->d.seqs);
        return r;
    }
    const vkla_lion_dims *d = &p->d;
    const bool norm = (d->flags & F_NORM) != 0;
    p->Kp = (d->K + 3) & ~3u;
    p->Vx = d->V + (norm ? 1 : 0);
    p->Xv = (p->Vx + 3) & ~3u;
    p->gate = a->dg.buffer || a->dg_gamma.buffer;

    /* scratch layout (offsets from a 16-byte aligned start inside the caller's scratch) */
    uint64_t al = vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    uint64_t off = 0;
    if (d->flags & F_VARLEN) {
        p->off_seq = off;
        off = vkla__align_up(off + (uint64_t)d->N * 16, al);
        p->off_chunk = off;
        off = vkla__align_up(off + d->seqs.nchunks * 8 + 8, al);
    }
    const uint64_t rows = (uint64_t)d->B * d->T * d->H;
    const uint64_t slots = d->seqs.nchunks * (TILE / d->C);
    const uint64_t st = (uint64_t)d->H * slots * 2 * p->Kp * p->Xv;
    uint64_t size[R_COUNT] = {0};
    size[R_Q] = size[R_K] = rows * p->Kp;
    size[R_V] = size[R_DO] = rows * p->Xv;
    if (a->dq.buffer)
        size[R_DQ] = rows * p->Kp;
    if (a->dk.buffer)
        size[R_DK] = rows * p->Kp;
    if (a->dv.buffer)
        size[R_DV] = rows * p->Xv;
    if (norm)
        size[R_ND] = rows * p->Xv;
    size[R_SQ] = size[R_DKS] = st;
    if (p->gate) {
        size[R_PAIRS] = rows * 2;
        size[R_PART] = (uint64_t)d->N * d->H;
    }
    for (int i = 0; i < R_COUNT; i++) {
        p->off[i] = UINT64_MAX;
        if (size[i]) {
            p->off[i] = off;
            off = vkla__align_up(off + size[i] * 4, al);
        }
    }
    p->scratch_bytes = off + 16; /* slack to align the start */
    return VKLA_SUCCESS;
}

/* What every dispatch of one call shares. */
typedef struct rec {
    vkla_context *ctx;
    VkCommandBuffer cmd;
    const bplan *p;
    vkla_buffer *scr;
    uint64_t base;                /* 16-byte aligned start of the regions in scr */
    vkla_split *splits;
    uint32_t nsplit;
    uint32_t rb, tile_lanes;
    vkla_bind common[B_COUNT];    /* gates and tables */
} rec;

/* A packed region with rows of x floats; its strides go to st. */
static vkla_bind region(const rec *c, int r, uint32_t x, uint64_t *st)
{
    uint64_t dummy[3];
    return vkla__lion_packed_bind(&c->p->d, c->scr, c->base + c->p->off[r], x, st ? st : dummy);
}

/* The states of region r: [H, slots, 2, Kp, Xv] floats (either orientation). */
static vkla_bind state_region(const rec *c, int r)
{
    const bplan *p = c->p;
    uint64_t per = (uint64_t)(TILE / p->d.C) * 2 * p->Kp * p->Xv; /* per 64-token tile */
    return vkla__bind_region(c->scr, c->base + p->off[r], 4, VKLA_ROWS_CHUNKS, per,
                             p->d.seqs.nchunks * per, per, 0);
}

/* A launch with the call's push constants and the common bindings. */
static void launch_init(const rec *c, vkla_launch *l, vkla_bind *binds, uint32_t xs)
{
    memset(l, 0, sizeof(*l));
    vkla__lion_push(&c->p->d, xs, l);
    memcpy(binds, c->common, sizeof(c->common));
    l->nbind = B_COUNT;
    l->binds = binds;
    l->grid_x = 1;
    l->grid_z = VKLA_GRID_CHUNKS;
}

static vkla_result go(const rec *c, const vkla_launch *l)
{
    return vkla__launch_splits(c->ctx, c->cmd, &c->p->d.seqs, c->splits, c->nsplit, l);
}

/* Packs a caller tensor of X-element rows into region r (ones: column X set to 1). */
static vkla_result pack(const rec *c, const vkla_tensor *t, int r, uint32_t X, uint32_t xp,
                        bool ones)
{
    vkla_pipeline *pp;
    vkla_result res = vkla__lion_pipeline(c->ctx, "pack", (int)t->dtype, 64, c->rb,
                                          vkla__lion_vec4_rows(t), B_COUNT, &pp);
    if (res != VKLA_SUCCESS)
        return res;
    vkla_launch l;
    vkla_bind binds[B_COUNT];
    launch_init(c, &l, binds, xp);
    uint64_t st[VKLA_MAX_DIMS];
    binds[B_Q] = vkla__bind_tensor(t, VKLA_ROWS_TOKENS);
    vkla__tensor_strides(t, st);
    vkla__lion_set_strides(&l, 0, st);
    binds[B_ST] = region(c, r, xp, NULL);
    l.push[W_K] = X;
    if (ones)
        l.push[W_CFG] |= F_ONES;
    l.pipe = pp;
    return go(c, &l);
}

/* Unpacks region r (rows of xp floats, X used) into a caller gradient tensor. */
static vkla_result unpack(const rec *c, const vkla_tensor *t, int r, uint32_t X, uint32_t xp)
{
    vkla_pipeline *pp;
    vkla_result res = vkla__lion_pipeline(c->ctx, "unpack", (int)t->dtype, 64, c->rb,
                                          vkla__lion_vec4_rows(t), B_COUNT, &pp);
    if (res != VKLA_SUCCESS)
        return res;
    vkla_launch l;
    vkla_bind binds[B_COUNT];
    launch_init(c, &l, binds, xp);
    uint64_t st[VKLA_MAX_DIMS];
    binds[B_O] = vkla__bind_tensor(t, VKLA_ROWS_TOKENS);
    vkla__tensor_strides(t, st);
    vkla__lion_set_strides(&l, 3, st);
    binds[B_ST] = region(c, r, xp, NULL);
    l.push[W_V] = X;
    l.pipe = pp;
    return go(c, &l);
}

/* A LION-like product out_i = scale sum_j (x_i . y_j) M_ij w_j (M^T with trans) on the
 * forward's chunk kernels: x and y have lxy columns, w and out lw. scan() writes its states
 * (sum of weighted y_j w_j^T) into region sr; output() reads them from sr, transposed with
 * state_t (the states the scan of the product with y and w swapped wrote). */
static vkla_result product_launch(const rec *c, vkla_launch *l, vkla_bind *binds, const int *regs,
                                  uint32_t lxy, uint32_t lw, uint32_t flags, int sr)
{
    const bplan *p = c->p;
    const uint32_t xpxy = (lxy + 3) & ~3u, xpw = (lw + 3) & ~3u;
    launch_init(c, l, binds, xpw);
    uint64_t st[3];
    const uint32_t xps[4] = {xpxy, xpxy, xpw, xpw};
    for (int i = 0; i < 4; i++) {
        if (regs[i] < 0)
            continue;
        binds[B_Q + i] = region(c, regs[i], xps[i], st);
        vkla__lion_set_strides(l, i, st);
    }
    binds[B_ST] = state_region(c, sr);
    l->push[W_K] = lxy;
    l->push[W_V] = lw;
    l->push[W_CFG] = (p->d.flags & (F_G | F_GAMMA | F_VARLEN)) | flags | (p->d.C << 8);
    const char *kernel = regs[0] < 0 ? "chunk_state" : "chunk_output";
    vkla_result r = vkla__lion_pipeline(c->ctx, kernel, -1, c->tile_lanes, c->rb, 1, B_COUNT,
                                        &l->pipe);
    if (r != VKLA_SUCCESS)
        return r;
    if (regs[0] < 0) {
        l->grid_x = ((lxy + TILE - 1) / TILE) * ((lw + TILE - 1) / TILE) * 2;
        l->grid_z = VKLA_GRID_SEQS;
    } else {
        l->grid_x = (lw + TILE - 1) / TILE;
        l->grid_z = VKLA_GRID_CHUNKS;
    }
    r = go(c, l);
    vkla__compute_barrier(c->ctx, c->cmd);
    return r;
}

static vkla_result scan(const rec *c, int y, int w, uint32_t lxy, uint32_t lw, bool trans, int sr)
{
    vkla_launch l;
    vkla_bind binds[B_COUNT];
    const int regs[4] = {-1, y, w, -1};
    return product_launch(c, &l, binds, regs, lxy, lw, trans ? F_TRANS : 0, sr);
}

static vkla_result output(const rec *c, int x, int y, int w, int out, uint32_t lxy, uint32_t lw,
                          bool trans, bool state_t, int sr)
{
    vkla_launch l;
    vkla_bind binds[B_COUNT];
    const int regs[4] = {x, y, w, out};
    return product_launch(c, &l, binds, regs, lxy, lw,
                          (trans ? F_TRANS : 0) | (state_t ? F_STATE_T : 0), sr);
}

/* The log-decay gradients: per-token terms, their reverse cumulative sums, dg_gamma. */
static vkla_result gate_grads(const rec *c, const vkla_lion_backward_args *a)
{
    const bplan *p = c->p;
    vkla_pipeline *pg, *pd;
    vkla_result r;
    if ((r = vkla__lion_pipeline(c->ctx, "bwd_gate", -1, c->tile_lanes, c->rb, 1, B_COUNT + 1,
                                 &pg)) != VKLA_SUCCESS ||
        (r = vkla__lion_pipeline(c->ctx, "bwd_dg", -1, 64, c->rb, 1, B_COUNT, &pd)) !=
            VKLA_SUCCESS)
        return r;
    vkla_launch l;
    vkla_bind binds[B_COUNT + 1];
    launch_init(c, &l, binds, p->Xv);
    binds[B_Q] = region(c, R_Q, p->Kp, NULL);
    binds[B_K] = region(c, R_K, p->Kp, NULL);
    binds[B_V] = region(c, R_V, p->Xv, NULL);
    binds[B_Z] = region(c, R_DO, p->Xv, NULL);
    binds[B_O] = region(c, R_PAIRS, 2, NULL);
    binds[B_ST] = state_region(c, R_SQ);
    binds[B_COUNT] = state_region(c, R_DKS);
    l.nbind = B_COUNT + 1;
    l.base_word[B_COUNT] = W_STRIDES; /* bwd_gate.comp reads it from word q_sb */
    l.push[W_V] = p->Vx;
    l.pipe = pg;
    if ((r = go(c, &l)) != VKLA_SUCCESS)
        return r;
    vkla__compute_barrier(c->ctx, c->cmd);

    launch_init(c, &l, binds, p->Xv);
    binds[B_ST] = region(c, R_PAIRS, 2, NULL);
    binds[B_O] = vkla__bind_tensor(&a->dg, VKLA_ROWS_TOKENS);
    binds[B_Z] = vkla__bind_region(c->scr, c->base + p->off[R_PART], 4, VKLA_ROWS_SEQS, p->d.H,
                                   1, 1, 0);
    l.push[W_CFG] |= (a->dg.buffer ? DG_OUT : 0) | (a->dg_gamma.buffer ? DG_PARTIAL : 0);
    l.pipe = pd;
    l.grid_z = VKLA_GRID_SEQS;
    if ((r = go(c, &l)) != VKLA_SUCCESS || !a->dg_gamma.buffer)
        return r;
    vkla__compute_barrier(c->ctx, c->cmd);

    /* dg_gamma: one workgroup per head sums the sequences' partials */
    launch_init(c, &l, binds, p->d.N);
    binds[B_Z] = vkla__bind_region(c->scr, c->base + p->off[R_PART], 4, VKLA_ROWS_WHOLE, 0, 0, 0,
                                   (uint64_t)p->d.N * p->d.H * 4);
    binds[B_O] = vkla__bind_tensor(&a->dg_gamma, VKLA_ROWS_NONE);
    l.push[W_CFG] |= DG_FINAL;
    l.pipe = pd;
    l.grid_z = VKLA_GRID_SEQS;
    const vkla_split one = {0, 1, 0, p->d.H};
    return vkla__launch(c->ctx, c->cmd, &p->d.seqs, &one, &l);
}

static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd,
                          const vkla_lion_backward_args *a, bool run_mode)
{
    bplan p;
    vkla_result r = make_plan(ctx, a, &p);
    if (r != VKLA_SUCCESS)
        return r;
    rec c;
    memset(&c, 0, sizeof(c));
    c.ctx = ctx;
    c.cmd = cmd;
    c.p = &p;
    const vkla_lion_dims *d = &p.d;
    const bool norm = (d->flags & F_NORM) != 0;
    const bool any = a->dq.buffer || a->dk.buffer || a->dv.buffer || p.gate;
    uint64_t soff;
    r = vkla__resolve_scratch(ctx, OP, p.scratch_bytes, a->scratch, a->scratch_offset, run_mode,
                              0, &c.scr, &soff);
    if (r != VKLA_SUCCESS || !any)
        goto done;
    if (ctx->caps.props.limits.maxComputeSharedMemorySize < 20 * 1024) {
        r = vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                       OP ": needs 20 KiB of shared memory per workgroup, the device has %u bytes",
                       ctx->caps.props.limits.maxComputeSharedMemorySize);
        goto done;
    }
    c.base = vkla__align_up(c.scr->base + soff, 16) - c.scr->base;
    c.rb = vkla__lion_lane_block(ctx);
    c.tile_lanes = (TILE / c.rb) * (TILE / c.rb);
    c.common[B_G] = vkla__bind_tensor(&a->fwd.g, VKLA_ROWS_TOKENS);
    c.common[B_GAMMA] = vkla__bind_tensor(&a->fwd.g_gamma, VKLA_ROWS_NONE);
    if (d->flags & F_VARLEN) {
        c.common[B_SEQ] = vkla__bind_region(c.scr, c.base + p.off_seq, 16, VKLA_ROWS_WHOLE, 0, 0,
                                            0, (uint64_t)d->N * 16);
        c.common[B_CHUNK] = vkla__bind_region(c.scr, c.base + p.off_chunk, 8, VKLA_ROWS_WHOLE, 0,
                                              0, 0, d->seqs.nchunks * 8 + 8);
    }

    /* every region any dispatch binds, for the split plan */
    vkla_bind all[B_COUNT + R_COUNT + 16];
    uint32_t nall = 0;
    memcpy(all, c.common, sizeof(c.common));
    nall = B_COUNT;
    const vkla_tensor *user[] = {&a->fwd.q, &a->fwd.k, &a->fwd.v, &a->dout,
                                 &a->dq,    &a->dk,    &a->dv};
    for (size_t i = 0; i < sizeof(user) / sizeof(user[0]); i++)
        all[nall++] = vkla__bind_tensor(user[i], VKLA_ROWS_TOKENS);
    all[nall++] = vkla__bind_tensor(&a->dg, VKLA_ROWS_TOKENS);
    all[nall++] = vkla__bind_tensor(&a->dg_gamma, VKLA_ROWS_NONE);
    for (int i = 0; i < R_COUNT; i++) {
        if (p.off[i] == UINT64_MAX)
            continue;
        if (i == R_SQ || i == R_DKS)
            all[nall++] = state_region(&c, i);
        else if (i == R_PART)
            all[nall++] = vkla__bind_region(c.scr, c.base + p.off[i], 4, VKLA_ROWS_SEQS, d->H, 1,
                                            1, 0);
        else
            all[nall++] = region(&c, i, i == R_PAIRS ? 2 : (i == R_Q || i == R_K ||
                                                             i == R_DQ || i == R_DK)
                                                                ? p.Kp : p.Xv, NULL);
    }
    if ((r = vkla__plan_splits(ctx, &d->seqs, d->H, all, nall, &c.splits, &c.nsplit)) !=
        VKLA_SUCCESS)
        goto done;

    /* order this call's scratch use after earlier vkla work on the same scratch */
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                      VK_ACCESS_TRANSFER_WRITE_BIT);
    if ((d->flags & F_VARLEN) &&
        (r = vkla__lion_tables(ctx, cmd, d, c.scr, c.base + p.off_seq, c.base + p.off_chunk)) !=
            VKLA_SUCCESS)
        goto done;

    /* packed f32 rows: q, k, v' (with the ones column under normalize), dout */
    if ((r = pack(&c, &a->fwd.q, R_Q, d->K, p.Kp, false)) != VKLA_SUCCESS ||
        (r = pack(&c, &a->fwd.k, R_K, d->K, p.Kp, false)) != VKLA_SUCCESS ||
        (r = pack(&c, &a->fwd.v, R_V, d->V, p.Xv, norm)) != VKLA_SUCCESS ||
        (r = pack(&c, &a->dout, R_DO, d->V, p.Xv, false)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);

    /* the states of dq's product (v'_j k_j^T, mask M); transposed, those of the forward */
    const bool want_dq = a->dq.buffer, want_dk = a->dk.buffer;
    if ((norm || want_dq || p.gate) &&
        (r = scan(&c, R_V, R_K, p.Vx, d->K, false, R_SQ)) != VKLA_SUCCESS)
        goto done;
    if (norm) {
        /* the forward with the ones column: n_i and d_i - eps; then do' in place */
        vkla_pipeline *pp;
        if ((r = output(&c, R_Q, R_K, R_V, R_ND, d->K, p.Vx, false, true, R_SQ)) !=
                VKLA_SUCCESS ||
            (r = vkla__lion_pipeline(ctx, "bwd_prep", -1, 64, c.rb, 1, B_COUNT, &pp)) !=
                VKLA_SUCCESS)
            goto done;
        vkla_launch l;
        vkla_bind binds[B_COUNT];
        launch_init(&c, &l, binds, p.Xv);
        binds[B_ST] = region(&c, R_ND, p.Xv, NULL);
        binds[B_Z] = region(&c, R_DO, p.Xv, NULL);
        l.pipe = pp;
        if ((r = go(&c, &l)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
    }
    /* dq = product(do', v', k; M) */
    if (want_dq && (r = output(&c, R_DO, R_V, R_K, R_DQ, p.Vx, d->K, false, false, R_SQ)) !=
                       VKLA_SUCCESS)
        goto done;
    /* the states of dk's product (do'_i q_i^T, mask M^T); transposed, those of dv's */
    if ((want_dk || a->dv.buffer || p.gate) &&
        (r = scan(&c, R_DO, R_Q, p.Vx, d->K, true, R_DKS)) != VKLA_SUCCESS)
        goto done;
    /* dk = product(v', do', q; M^T) */
    if (want_dk && (r = output(&c, R_V, R_DO, R_Q, R_DK, p.Vx, d->K, true, false, R_DKS)) !=
                       VKLA_SUCCESS)
        goto done;
    /* dv = product(k, q, do'; M^T), the ones column dropped */
    if (a->dv.buffer &&
        (r = output(&c, R_K, R_Q, R_DO, R_DV, d->K, p.Vx, true, true, R_DKS)) != VKLA_SUCCESS)
        goto done;
    if (p.gate) {
        if ((r = gate_grads(&c, a)) != VKLA_SUCCESS)
            goto done;
    }
    if ((a->dq.buffer && (r = unpack(&c, &a->dq, R_DQ, d->K, p.Kp)) != VKLA_SUCCESS) ||
        (a->dk.buffer && (r = unpack(&c, &a->dk, R_DK, d->K, p.Kp)) != VKLA_SUCCESS) ||
        (a->dv.buffer && (r = unpack(&c, &a->dv, R_DV, d->V, p.Xv)) != VKLA_SUCCESS))
        goto done;
done:
    free(c.splits);
    vkla__seqs_free(&p.d.seqs);
    return r;
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    bplan p;
    vkla_result r = make_plan(ctx, (const vkla_lion_backward_args *)args, &p);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = p.scratch_bytes;
    vkla__seqs_free(&p.d.seqs);
    return VKLA_SUCCESS;
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return record(ctx, cmd, (const vkla_lion_backward_args *)args, run_mode);
}

static const vkla_op_impl IMPL = {OP, op_scratch, op_record};

vkla_result vkla_lion_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                      const vkla_lion_backward_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_lion_backward_run(vkla_context *ctx, const vkla_lion_backward_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_lion_backward_scratch_size(vkla_context *ctx,
                                            const vkla_lion_backward_args *args, uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_lion_backward_bench(vkla_context *ctx, const vkla_lion_backward_args *args,
                                     uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
