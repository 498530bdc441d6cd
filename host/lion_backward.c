/* Backward pass of lion (SPEC section 4): argument checks, scratch layout, and the chunkwise
 * gradient kernels. The math is in docs/lion.md ("Backward") and the kernels' headers.
 *
 * Every gradient is a LION-like product out_i = scale sum_j (x_i . y_j) M'_ij w_j, computed by
 * the forward's own chunk kernels (chunk_state + chunk_output) on packed f32 rows:
 *   dq = product(x = do', y = v', w = k,  M),    dk = product(x = v', y = do', w = q,  M^T),
 *   dv = product(x = k,   y = q,  w = do', M^T)  (over the first V columns of do' only),
 * with v' = v and do' = dout, or under normalize v' = [v, 1] and do' the gradient of the
 * augmented output (bwd_prep.comp, after one forward product for o and the denominators).
 * The log-decay gradients come from per-token terms, which the dq and dk outputs form next to
 * their gradients (F_TERMS in chunk_output.comp: the state parts dotted with q and k, and in
 * dq's the intra-chunk block), and a reverse cumulative sum per sequence (bwd_dg.comp). */
#include "lion_common.h"

#include <stdlib.h>
#include <string.h>

#define OP "lion_backward"
#define TILE LION_TILE
#define FLOAT_DTYPES ((1u << VKLA_DTYPE_F32) | (1u << VKLA_DTYPE_F16) | (1u << VKLA_DTYPE_BF16))

/* bwd_dg.comp's output switches (push word W_CFG) */
enum { DG_OUT = 1 << 16, DG_PARTIAL = 1 << 17, DG_FINAL = 1 << 18, DG_CARRY = 1 << 19 };

/* scratch regions: packed rows [B,T,H,X] and the states of the products */
enum { R_Q, R_K, R_V, R_DO, R_DQ, R_DK, R_DV, R_ND, R_SQ, R_DKS, R_PAIRS, R_PART, R_SINK0,
       R_SINK1, R_COUNT };

typedef struct bplan {
    vkla_lion_dims d;
    uint32_t Kp, Vx, Xv;    /* K rounded up to 4; value width (+1 with normalize), rounded */
    bool gate;              /* dg or dg_gamma requested */
    uint32_t nterm;         /* term pairs per token: per K tile dq's, then dk's */
    uint64_t off_seq, off_chunk;
    uint64_t off[R_COUNT];  /* UINT64_MAX = region not used */
    /* the caller's tensor where the kernels can use it as is (f32 rows of 4-aligned length,
     * strides and start) instead of a packed region */
    const vkla_tensor *user[R_COUNT];
    uint64_t scratch_bytes;
    bool short_path;        /* host/lion_short.c instead of the chunk kernels */
} bplan;

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
            if (vkla__views_overlap(all[i].t, all[j].t))
                return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                                  OP ": %s overlaps %s; gradients need memory of their own",
                                  all[i].name, all[j].name);
    return VKLA_SUCCESS;
}

static uint32_t row_len(const bplan *p, int r);

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
    uint64_t al, off = vkla__lion_layout_tables(ctx, d, &al, &p->off_seq, &p->off_chunk);
    const uint64_t rows = (uint64_t)d->B * d->T * d->H;
    const uint64_t slots = d->seqs.nchunks * (TILE / d->C);
    const uint64_t st = (uint64_t)d->H * slots * 2 * p->Kp * p->Xv;
    uint64_t size[R_COUNT] = {0};
    const vkla_tensor *ts[R_DV + 1] = {&a->fwd.q, &a->fwd.k, &a->fwd.v, &a->dout,
                                       &a->dq,    &a->dk,    &a->dv};
    for (int i = R_Q; i <= R_DV; i++) {
        if (!ts[i]->buffer) {
            /* the decay gradient's terms come out of the dq and dk outputs */
            if (p->gate && (i == R_DQ || i == R_DK))
                size[i] = rows * row_len(p, i);
            continue;
        }
        /* v' and dout' carry the normalizer column: always packed under normalize */
        if (ts[i]->dtype == VKLA_DTYPE_F32 && vkla__lion_vec4_rows(ts[i]) &&
            !(norm && (i == R_V || i == R_DO)))
            p->user[i] = ts[i];
        else
            size[i] = rows * row_len(p, i);
    }
    /* with the terms, the dq (dk) output reads q (k) rows with its own strides: where those
     * differ, both are packed */
    for (int i = 0; p->gate && i < 2; i++) {
        const int y = i ? R_K : R_Q, o = i ? R_DK : R_DQ;
        uint64_t sy[VKLA_MAX_DIMS], so[VKLA_MAX_DIMS];
        if (p->user[y] && p->user[o]) {
            vkla__tensor_strides(p->user[y], sy);
            vkla__tensor_strides(p->user[o], so);
            if (!memcmp(sy, so, 3 * sizeof(sy[0])))
                continue;
        }
        if (!p->user[y] && !p->user[o])
            continue;
        p->user[y] = p->user[o] = NULL;
        size[y] = size[o] = rows * row_len(p, y);
    }
    if (norm)
        size[R_ND] = rows * p->Xv;
    size[R_SQ] = size[R_DKS] = st;
    /* chunk_state can write its z binding (normalize): the two scans, which run side by side,
     * get a region each rather than the shared placeholder buffer */
    size[R_SINK0] = size[R_SINK1] = 4;
    if (p->gate) {
        p->nterm = 2 * ((d->K + TILE - 1) / TILE);
        size[R_PAIRS] = rows * 2 * p->nterm;
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
    if ((p->short_path = vkla__lion_short_use(ctx, d)))
        p->scratch_bytes = vkla__lion_short_scratch(ctx, d);
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
    const vkla_lion_bwd_piece *pc; /* a piece of a longer call, or NULL */
} rec;

/* Row length (floats) of a packed region. */
static uint32_t row_len(const bplan *p, int r)
{
    if (r == R_PAIRS)
        return 2 * p->nterm;
    return r == R_Q || r == R_K || r == R_DQ || r == R_DK ? p->Kp : p->Xv;
}

/* A packed region with rows of x floats; its strides go to st. */
static vkla_bind region(const rec *c, int r, uint32_t x, uint64_t *st)
{
    uint64_t dummy[VKLA_MAX_DIMS];
    if (c->p->user[r]) {
        vkla__tensor_strides(c->p->user[r], st ? st : dummy);
        return vkla__bind_tensor(c->p->user[r], VKLA_ROWS_TOKENS);
    }
    return vkla__lion_packed_bind(&c->p->d, c->scr, c->base + c->p->off[r], x, st ? st : dummy);
}

/* The states of region r: [H, slots, 2, Kp, Xv] floats (either orientation). */
/* A small region bound whole (the scans' z sinks). */
static vkla_bind whole_region(const rec *c, int r)
{
    return vkla__bind_region(c->scr, c->base + c->p->off[r], 4, VKLA_ROWS_WHOLE, 0, 0, 0, 16);
}

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

/* Tokens of the call times heads: the per-launch byte models count rows of f32 per token and
 * head (docs/bench.md). */
static double rows(const rec *c)
{
    return vkla__chunk_sums(&c->p->d.seqs, 0).s1 * c->p->d.H;
}

static vkla_result go(const rec *c, const vkla_launch *l)
{
    return vkla__launch_splits(c->ctx, c->cmd, &c->p->d.seqs, c->splits, c->nsplit, l);
}

/* Copies rows between a caller tensor and region r (rows of xp floats, X used): pack.comp
 * into the region (ones: column X set to 1) or unpack.comp out of it. */
static vkla_result copy_rows(const rec *c, bool into, const vkla_tensor *t, int r, uint32_t X,
                             uint32_t xp, bool ones)
{
    if (c->p->user[r])
        return VKLA_SUCCESS; /* the kernels use the caller's tensor itself */
    vkla_pipeline *pp;
    vkla_result res = vkla__lion_pipeline(c->ctx, into ? "pack" : "unpack", (int)t->dtype, 64,
                                          c->rb, vkla__lion_vec4_rows(t), B_COUNT, &pp);
    if (res != VKLA_SUCCESS)
        return res;
    vkla_launch l;
    vkla_bind binds[B_COUNT];
    launch_init(c, &l, binds, xp);
    uint64_t st[VKLA_MAX_DIMS];
    const int slot = into ? B_Q : B_O;
    binds[slot] = vkla__bind_tensor(t, VKLA_ROWS_TOKENS);
    vkla__tensor_strides(t, st);
    vkla__lion_set_strides(&l, slot - B_Q, st);
    binds[B_ST] = region(c, r, xp, NULL);
    l.push[into ? W_K : W_V] = X;
    if (ones)
        l.push[W_CFG] |= F_ONES;
    l.pipe = pp;
    l.bytes = rows(c) * X * (4 + (double)vkla_dtype_size(t->dtype));
    return go(c, &l);
}

/* A LION-like product out_i = scale sum_j (x_i . y_j) M_ij w_j (M^T with trans) on the
 * forward's chunk kernels: x and y have lxy columns, w and out lw. scan() writes its states
 * (sum of weighted y_j w_j^T) into region sr; output() reads them from sr, transposed with
 * state_t (the states the scan of the product with y and w swapped wrote), and with terms >= 0
 * also writes the decay-gradient terms of its state parts dotted with the rows of region terms.
 * regs: x, y, w, out, terms. */
static vkla_result product_launch(const rec *c, vkla_launch *l, vkla_bind *binds, const int *regs,
                                  uint32_t lxy, uint32_t lw, uint32_t flags, int sr)
{
    /* binds holds B_COUNT + 1 slots (chunk_output's B_TERMS) */
    const bplan *p = c->p;
    /* the states' column count: lw rounded up, or read transposed, the other product's (both
     * state regions hold [align4(V'), align4(K)] blocks) */
    launch_init(c, l, binds, (flags & F_STATE_T) ? p->Xv : (lw + 3) & ~3u);
    uint64_t st[VKLA_MAX_DIMS];
    for (int i = 0; i < 4; i++) {
        if (regs[i] < 0)
            continue;
        binds[B_Q + i] = region(c, regs[i], row_len(p, regs[i]), st);
        vkla__lion_set_strides(l, i, st);
    }
    binds[B_ST] = state_region(c, sr);
    if (regs[0] < 0) {
        /* the scan declares o (its boundary slots, binding 3) writable: the scan's own sink
         * rather than the placeholder buffer every absent tensor reads */
        binds[B_Z] = whole_region(c, sr == R_SQ ? R_SINK0 : R_SINK1);
        binds[B_O] = binds[B_Z];
    }
    if (regs[0] < 0 && c->pc) { /* the scan of a piece: its boundary slots in o's place */
        binds[B_O] = vkla__bind_region(c->pc->buf, sr == R_SQ ? c->pc->slots_q : c->pc->slots_k,
                                       4, VKLA_ROWS_WHOLE, 0, 0, 0,
                                       2 * vkla__lion_slot_bytes(c->pc->nsh, lxy, lw));
        flags |= LION_F_BND | (c->pc->nsh << 17);
    }
    /* without the terms B_TERMS is never written: bound to out rather than to the shared
     * placeholder buffer, which a writable binding would order against every reader */
    binds[B_TERMS] = binds[B_O];
    if (regs[4] >= 0) {
        /* the decay-gradient terms: the rows dotted with the state parts (the o slot's strides,
         * see make_plan) and the term pairs, their base in word eps (unused without normalize) */
        binds[B_Z] = region(c, regs[4], row_len(p, regs[4]), NULL);
        binds[B_TERMS] = region(c, R_PAIRS, row_len(p, R_PAIRS), NULL);
        l->base_word[B_TERMS] = W_EPS;
        flags |= F_TERMS;
    }
    l->push[W_K] = lxy;
    l->push[W_V] = lw;
    l->push[W_CFG] = (p->d.flags & (F_G | F_GAMMA | F_VARLEN)) | (p->d.C << 8);
    l->push[W_CFG] |= flags;
    const char *kernel = regs[0] < 0 ? "chunk_state" : "chunk_output";
    if (regs[0] >= 0)
        l->nbind = B_COUNT + 1;
    vkla_result r = vkla__lion_pipeline(c->ctx, kernel, -1, c->tile_lanes, c->rb, 1, l->nbind,
                                        &l->pipe);
    if (r != VKLA_SUCCESS)
        return r;
    /* the models: the scan as the forward's chunk_state, the output as its chunk_output,
     * with lxy and lw in place of K and V' */
    const vkla_chunk_sums cs = vkla__chunk_sums(&p->d.seqs, p->d.C);
    const double H = p->d.H, stb = 4 * H * cs.n * 2 * (double)lxy * lw;
    if (regs[0] < 0) {
        l->grid_x = ((lxy + TILE - 1) / TILE) * ((lw + TILE - 1) / TILE) * 2;
        l->grid_z = VKLA_GRID_SEQS;
        l->flops = H * 4 * (double)lxy * lw * (cs.s1 + cs.n);
        l->bytes = 4 * rows(c) * (lxy + lw) + stb;
    } else {
        l->grid_x = (lw + TILE - 1) / TILE;
        l->grid_z = VKLA_GRID_CHUNKS;
        l->flops = H * (2 * cs.s2 * ((double)lxy + lw) + 4 * (double)lxy * lw * cs.s1);
        l->bytes = 4 * rows(c) * (2 * lxy + 2 * lw) + stb;
    }
    return go(c, l);
}

static vkla_result scan(const rec *c, int y, int w, uint32_t lxy, uint32_t lw, bool trans, int sr)
{
    vkla_launch l;
    vkla_bind binds[B_COUNT + 1];
    const int regs[5] = {-1, y, w, -1, -1};
    return product_launch(c, &l, binds, regs, lxy, lw, trans ? F_TRANS : 0, sr);
}

static vkla_result output(const rec *c, int x, int y, int w, int out, uint32_t lxy, uint32_t lw,
                          bool trans, bool state_t, int sr, int terms)
{
    vkla_launch l;
    vkla_bind binds[B_COUNT + 1];
    const int regs[5] = {x, y, w, out, terms};
    return product_launch(c, &l, binds, regs, lxy, lw,
                          (trans ? F_TRANS : 0) | (state_t ? F_STATE_T : 0), sr);
}

/* dg and dg_gamma from the per-token terms of gate_terms(). */
static vkla_result decay_grads(const rec *c, const vkla_lion_backward_args *a)
{
    const bplan *p = c->p;
    vkla_pipeline *pd;
    vkla_result r = vkla__lion_pipeline(c->ctx, "bwd_dg", -1, 64, c->rb, 1, B_COUNT, &pd);
    if (r != VKLA_SUCCESS)
        return r;
    vkla_launch l;
    vkla_bind binds[B_COUNT];
    launch_init(c, &l, binds, p->nterm);
    binds[B_ST] = region(c, R_PAIRS, row_len(p, R_PAIRS), NULL);
    /* without dg, a region of its own rather than the placeholder buffer the unpacks read */
    binds[B_O] = a->dg.buffer ? vkla__bind_tensor(&a->dg, VKLA_ROWS_TOKENS)
                              : whole_region(c, R_SINK0);
    /* a piece: the carry and the running sum in place of the per-sequence partials */
    const vkla_bind carry = c->pc ? vkla__bind_region(c->pc->buf, c->pc->carry, 4,
                                                      VKLA_ROWS_WHOLE, 0, 0, 0, 8ull * p->d.H)
                                  : (vkla_bind){0};
    binds[B_Z] = c->pc ? carry
                       : vkla__bind_region(c->scr, c->base + p->off[R_PART], 4, VKLA_ROWS_SEQS,
                                           p->d.H, 1, 1, 0);
    l.push[W_CFG] |= (a->dg.buffer ? DG_OUT : 0) | (a->dg_gamma.buffer ? DG_PARTIAL : 0) |
                     (c->pc ? DG_CARRY : 0);
    l.pipe = pd;
    l.grid_z = VKLA_GRID_SEQS;
    l.bytes = 4 * rows(c) * (2 * p->nterm + 1);
    if ((r = go(c, &l)) != VKLA_SUCCESS || !a->dg_gamma.buffer || (c->pc && !c->pc->final))
        return r;
    vkla__compute_barrier(c->ctx, c->cmd);

    /* dg_gamma: one workgroup per head sums the sequences' partials (a split call: the
     * running sum, one row) */
    launch_init(c, &l, binds, c->pc ? 1 : p->d.N);
    binds[B_Z] = c->pc ? carry
                       : vkla__bind_region(c->scr, c->base + p->off[R_PART], 4, VKLA_ROWS_WHOLE,
                                           0, 0, 0, (uint64_t)p->d.N * p->d.H * 4);
    binds[B_O] = vkla__bind_tensor(&a->dg_gamma, VKLA_ROWS_NONE);
    l.push[W_CFG] |= DG_FINAL;
    l.pipe = pd;
    l.grid_z = VKLA_GRID_SEQS;
    l.bytes = 4 * (double)p->d.N * p->d.H;
    const vkla_split one = {0, 1, 0, p->d.H};
    return vkla__launch(c->ctx, c->cmd, &p->d.seqs, &one, &l);
}

static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd,
                          const vkla_lion_backward_args *a, bool run_mode,
                          const vkla_lion_bwd_piece *pc)
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
    c.pc = pc;
    const int stage = pc ? pc->stage : LION_BWD_ALL;
    const vkla_lion_dims *d = &p.d;
    const bool norm = (d->flags & F_NORM) != 0;
    const bool any = a->dq.buffer || a->dk.buffer || a->dv.buffer || p.gate;
    if (p.short_path) {
        const vkla_tensor *t[7] = {&a->fwd.q, &a->fwd.k, &a->fwd.v, &a->dout,
                                   &a->dq,    &a->dk,    &a->dv};
        r = vkla__lion_short_record(ctx, cmd, OP, d, t, a->scratch, a->scratch_offset, run_mode);
        goto done;
    }
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
    vkla__bind_seq_tables(&d->seqs, c.scr, c.base + p.off_seq, c.base + p.off_chunk,
                          &c.common[B_SEQ], &c.common[B_CHUNK]);

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
        else if (i == R_SINK0 || i == R_SINK1)
            all[nall++] = whole_region(&c, i);
        else if (i == R_PART)
            all[nall++] = vkla__bind_region(c.scr, c.base + p.off[i], 4, VKLA_ROWS_SEQS, d->H, 1,
                                            1, 0);
        else
            all[nall++] = region(&c, i, row_len(&p, i), NULL);
    }
    if ((r = vkla__plan_splits(ctx, &d->seqs, d->H, all, nall, &c.splits, &c.nsplit)) !=
        VKLA_SUCCESS)
        goto done;

    if ((r = vkla__lion_tables(ctx, cmd, d, c.scr, c.base + p.off_seq, c.base + p.off_chunk)) !=
        VKLA_SUCCESS)
        goto done;

    /* packed f32 rows: q, k, v' (with the ones column under normalize), dout */
    if ((r = copy_rows(&c, true, &a->fwd.q, R_Q, d->K, p.Kp, false)) != VKLA_SUCCESS ||
        (r = copy_rows(&c, true, &a->fwd.k, R_K, d->K, p.Kp, false)) != VKLA_SUCCESS ||
        (r = copy_rows(&c, true, &a->fwd.v, R_V, d->V, p.Xv, norm)) != VKLA_SUCCESS ||
        (r = copy_rows(&c, true, &a->dout, R_DO, d->V, p.Xv, false)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);

    /* Phases, a barrier between each (dispatches inside a phase are independent): the
     * scans; [normalize: the forward output, do']; the outputs and the gate terms; the
     * decay gradients and the unpacked gradients. */
    const bool gate = p.gate, want_dq = a->dq.buffer, want_dk = a->dk.buffer,
               want_dv = a->dv.buffer;
    /* the states of dq's product (v'_j k_j^T, mask M); transposed, those of the forward */
    if ((norm || want_dq || gate) &&
        (r = scan(&c, R_V, R_K, p.Vx, d->K, false, R_SQ)) != VKLA_SUCCESS)
        goto done;
    if (stage == LION_BWD_SCAN_Q)
        goto done;
    if (norm) {
        /* the forward with the ones column: n_i and d_i - eps; then do' in place */
        vkla__compute_barrier(ctx, cmd);
        vkla_pipeline *pp;
        if ((r = output(&c, R_Q, R_K, R_V, R_ND, d->K, p.Vx, false, true, R_SQ, -1)) !=
                VKLA_SUCCESS ||
            (r = vkla__lion_pipeline(ctx, "bwd_prep", -1, 64, c.rb, 1, B_COUNT, &pp)) !=
                VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
        vkla_launch l;
        vkla_bind binds[B_COUNT];
        launch_init(&c, &l, binds, p.Xv);
        binds[B_ST] = region(&c, R_ND, p.Xv, NULL);
        binds[B_Z] = region(&c, R_DO, p.Xv, NULL);
        l.pipe = pp;
        l.bytes = 4 * rows(&c) * 3 * p.Xv;
        if ((r = go(&c, &l)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
    }
    /* the states of dk's product (do'_i q_i^T, mask M^T); transposed, those of dv's */
    if ((want_dk || want_dv || gate) &&
        (r = scan(&c, R_DO, R_Q, p.Vx, d->K, true, R_DKS)) != VKLA_SUCCESS)
        goto done;
    if (stage == LION_BWD_SCANS)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    /* dq = product(do', v', k; M), dk = product(v', do', q; M^T) (with the decay gradient's
     * terms), dv = product(k, q, do'; M^T) over the V columns of do' only */
    const int tq = gate ? R_Q : -1, tk = gate ? R_K : -1;
    if (((want_dq || gate) &&
         (r = output(&c, R_DO, R_V, R_K, R_DQ, p.Vx, d->K, false, false, R_SQ, tq)) !=
             VKLA_SUCCESS) ||
        ((want_dk || gate) &&
         (r = output(&c, R_V, R_DO, R_Q, R_DK, p.Vx, d->K, true, false, R_DKS, tk)) !=
             VKLA_SUCCESS) ||
        (want_dv && (r = output(&c, R_K, R_Q, R_DO, R_DV, d->K, d->V, true, true, R_DKS, -1)) !=
                        VKLA_SUCCESS))
        goto done;
    vkla__compute_barrier(ctx, cmd);
    if ((want_dq && (r = copy_rows(&c, false, &a->dq, R_DQ, d->K, p.Kp, false)) != VKLA_SUCCESS) ||
        (want_dk && (r = copy_rows(&c, false, &a->dk, R_DK, d->K, p.Kp, false)) != VKLA_SUCCESS) ||
        (want_dv && (r = copy_rows(&c, false, &a->dv, R_DV, d->V, p.Xv, false)) != VKLA_SUCCESS) ||
        (gate && (r = decay_grads(&c, a)) != VKLA_SUCCESS))
        goto done;
done:
    free(c.splits);
    vkla__seqs_free(&p.d.seqs);
    return r;
}

vkla_result vkla__lion_backward_scratch_one(vkla_context *ctx, const vkla_lion_backward_args *a,
                                            uint64_t *bytes, bool *short_path)
{
    bplan p;
    vkla_result r = make_plan(ctx, a, &p);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = p.scratch_bytes;
    if (short_path)
        *short_path = p.short_path;
    vkla__seqs_free(&p.d.seqs);
    return VKLA_SUCCESS;
}

vkla_result vkla__lion_backward_record_one(vkla_context *ctx, VkCommandBuffer cmd,
                                           const vkla_lion_backward_args *a, bool run_mode,
                                           const vkla_lion_bwd_piece *pc)
{
    return record(ctx, cmd, a, run_mode, pc);
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    return vkla__lion_backward_tsplit_scratch(ctx, (const vkla_lion_backward_args *)args, bytes);
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return vkla__lion_backward_tsplit_record(ctx, cmd, (const vkla_lion_backward_args *)args,
                                             run_mode);
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
