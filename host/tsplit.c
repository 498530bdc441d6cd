/* Long sequences: a call of a causal op whose (sequence, head) slab does not fit the device's
 * maxStorageBufferRange, or whose scratch would exceed a bound, runs as several calls of the
 * op, each over whole short sequences (a group) or over a piece of T of one long sequence (a
 * chain of pieces that start on chunk boundaries). Pieces of a chain pass the state on: the
 * caller's h0 enters the first, each piece's ht is the next piece's h0 (two small state slots in
 * scratch, used in turn), the last writes the caller's ht.
 *
 * Backward passes run a chain in two sweeps: the forward's state pass over the pieces in order
 * keeps the state entering every piece (one slot per piece boundary), then the backward pieces
 * run in reverse order, each with dht taken from the next piece's dh0 (two slots used in turn).
 * Outputs summed over the whole call (dg_gamma) are written by the first call and added to by
 * the others (shaders/common/accumulate.comp).
 *
 * The scratch of a split call: the largest scratch of one of its calls, at most the bound
 * (vkla_context_set_scratch_limit: default 1 GiB or VKLA_MAX_SCRATCH when the context was made,
 * and never more than maxStorageBufferRange - 256 so that
 * every window an op binds inside its scratch fits one storage-buffer range), then the state
 * slots: two per carried state, and for backward passes one per piece of the longest chain
 * (the state entering it) and two for the state gradient. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The longest piece, in tokens (a multiple of every chunk size). Kernels walk a sequence's
 * tokens or chunks in one loop, and CPU drivers end a shader loop after 65535 iterations
 * (llvmpipe: the invocation then silently skips the rest of its work; the delta_rule chunk
 * form's state pass met it near 100k tokens), so no call walks more than this. */
#define MAX_PIECE_TOKENS 32768u

/* One call of the op: sequences [s0, s0 + ns), tokens [t0, t0 + len) of dim 1 (absolute for
 * varlen, within every row otherwise); chain pieces cover one sequence. */
typedef struct piece {
    uint32_t s0, ns;
    uint64_t t0, len;
    bool chain, first, last;
} piece;

typedef struct tplan {
    const vkla_tsplit_desc *d;
    bool direct;                 /* one call of the op, as given */
    bool varlen;
    uint32_t N, B, C;
    uint64_t T;
    const int32_t *cu;
    piece *pieces;
    uint32_t npieces, max_chain; /* pieces of the longest chain */
    uint64_t state_elems[2];     /* f32 per row of each carried state */
    uint32_t state_ndim[2];
    uint64_t state_shape[2][VKLA_MAX_DIMS];
    uint64_t sum_elems;
    uint64_t piece_scratch;      /* the largest scratch of one call */
    uint64_t off_carry[2][2], off_bstate, off_dcarry[2], off_sum, total;
} tplan;

/* room for a copy of any op's args */
typedef union argbuf {
    char c[4096];
    uint64_t align;
} argbuf;

static vkla_tensor *field(void *args, uint16_t off) { return (vkla_tensor *)((char *)args + off); }
static const vkla_tensor *cfield(const void *args, uint16_t off)
{
    return (const vkla_tensor *)((const char *)args + off);
}

/* ------------------------------------------------------------------------------------------ */
/* Views of one call                                                                           */
/* ------------------------------------------------------------------------------------------ */

static void keep_strides(vkla_tensor *t, uint64_t *st)
{
    vkla__tensor_strides(t, st);
    for (uint32_t i = 0; i < t->ndim; i++)
        t->strides[i] = st[i];
}

static void cut_tokens(vkla_tensor *t, const tplan *tp, const piece *pc)
{
    if (!t->buffer)
        return;
    uint64_t st[VKLA_MAX_DIMS], es = vkla_dtype_size(t->dtype);
    keep_strides(t, st);
    if (!tp->varlen) {
        t->offset += pc->s0 * st[0] * es;
        t->shape[0] = pc->ns;
    }
    t->offset += pc->t0 * st[1] * es;
    t->shape[1] = pc->len;
}

static void cut_rows(vkla_tensor *t, uint32_t s0, uint32_t ns)
{
    if (!t->buffer)
        return;
    uint64_t st[VKLA_MAX_DIMS];
    keep_strides(t, st);
    t->offset += s0 * st[0] * vkla_dtype_size(t->dtype);
    t->shape[0] = ns;
}

/* A state slot in scratch: [1, shape...] f32. */
static vkla_tensor slot(const tplan *tp, vkla_buffer *buf, uint64_t off, uint32_t i)
{
    uint64_t shape[VKLA_MAX_DIMS] = {1};
    for (uint32_t d = 0; d < tp->state_ndim[i]; d++)
        shape[d + 1] = tp->state_shape[i][d];
    return vkla_tensor_make(buf, off, VKLA_DTYPE_F32, tp->state_ndim[i] + 1, shape);
}

/* The args of one call: cut views, its own sequence table (varlen groups; cu holds room for
 * ns + 1 offsets), and the scratch. */
static void piece_args(const tplan *tp, const void *args, const piece *pc, void *out,
                       int32_t *cu, vkla_buffer *scr, uint64_t soff)
{
    const vkla_tsplit_desc *d = tp->d;
    memcpy(out, args, d->args_size);
    for (uint32_t i = 0; i < d->ntok; i++)
        cut_tokens(field(out, d->tok[i]), tp, pc);
    for (uint32_t i = 0; i < d->nrows; i++)
        cut_rows(field(out, d->rows[i]), pc->s0, pc->ns);
    char *f = (char *)out + d->fwd;
    const int32_t **cup = (const int32_t **)(f + d->cu);
    uint32_t *nsp = (uint32_t *)(f + d->num_seqs);
    if (tp->varlen && !pc->chain) {
        for (uint32_t i = 0; i <= pc->ns; i++)
            cu[i] = tp->cu[pc->s0 + i] - tp->cu[pc->s0];
        *cup = cu;
        *nsp = pc->ns;
    } else {
        *cup = NULL;
        *nsp = 0;
    }
    *(vkla_buffer **)((char *)out + d->scratch) = scr;
    *(uint64_t *)((char *)out + d->scratch_offset) = soff;
}

/* Does every token tensor of a call fit one storage-buffer range (per head and row, or whole)? */
static bool piece_fits(vkla_context *ctx, const tplan *tp, const void *pargs)
{
    uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    uint64_t align = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    for (uint32_t i = 0; i < tp->d->ntok; i++) {
        const vkla_tensor *t = cfield(pargs, tp->d->tok[i]);
        if (!t->buffer)
            continue;
        uint64_t st[VKLA_MAX_DIMS], es = vkla_dtype_size(t->dtype), last = 0;
        vkla__tensor_strides(t, st);
        bool whole = tp->d->whole_tok & (1u << i);
        for (uint32_t k = 0; k < t->ndim; k++)
            if (whole || (k != 0 && k != 2)) /* per head: one row, one head */
                last += (t->shape[k] - 1) * st[k];
        if ((last + 1) * es + align > range)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Planning                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static uint64_t seq_len(const tplan *tp, uint32_t s)
{
    return tp->varlen ? (uint64_t)(tp->cu[s + 1] - tp->cu[s]) : tp->T;
}

static uint64_t seq_start(const tplan *tp, uint32_t s)
{
    return tp->varlen ? (uint64_t)tp->cu[s] : 0;
}

static piece whole(const tplan *tp, uint32_t s0, uint32_t ns)
{
    piece pc = {s0, ns, seq_start(tp, s0), 0, false, true, true};
    pc.len = tp->varlen ? (uint64_t)tp->cu[s0 + ns] - pc.t0 : tp->T;
    return pc;
}

/* The scratch of one call, and whether its tensors fit; false with *r set on a failure. */
static bool measure(vkla_context *ctx, const vkla_op_impl *op, const tplan *tp, const void *args,
                    const piece *pc, uint64_t *bytes, bool *fits, vkla_result *r)
{
    argbuf buf;
    int32_t *cu = malloc(((size_t)pc->ns + 1) * sizeof(int32_t));
    if (!cu) {
        *r = vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
        return false;
    }
    piece_args(tp, args, pc, buf.c, cu, NULL, 0);
    /* a chain piece in the middle of a sequence takes and gives states */
    *r = op->scratch(ctx, buf.c, bytes);
    if (*r == VKLA_SUCCESS && tp->d->backward && tp->d->states) {
        uint64_t sb = 0;
        char *f = buf.c + tp->d->fwd;
        for (uint32_t i = 0; i < tp->d->nstate; i++)
            memset(field(f, tp->d->s_out[i]), 0, sizeof(vkla_tensor));
        *r = tp->d->states->scratch(ctx, f, &sb);
        if (sb > *bytes)
            *bytes = sb;
    }
    *fits = piece_fits(ctx, tp, buf.c);
    free(cu);
    return *r == VKLA_SUCCESS;
}

static vkla_result push_piece(vkla_context *ctx, tplan *tp, uint32_t *cap, piece pc)
{
    if (tp->npieces == *cap) {
        uint32_t nc = *cap ? 2 * *cap : 16;
        piece *np = realloc(tp->pieces, nc * sizeof(piece));
        if (!np)
            return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
        tp->pieces = np;
        *cap = nc;
    }
    tp->pieces[tp->npieces++] = pc;
    return VKLA_SUCCESS;
}

/* Adds the group [s0, s0 + ns) of whole sequences, halved until each call fits. */
static vkla_result add_group(vkla_context *ctx, const vkla_op_impl *op, tplan *tp,
                             const void *args, uint64_t bound, uint32_t *cap, uint32_t s0,
                             uint32_t ns)
{
    piece pc = whole(tp, s0, ns);
    uint64_t bytes;
    bool fits;
    vkla_result r;
    if (!measure(ctx, op, tp, args, &pc, &bytes, &fits, &r))
        return r;
    if ((!fits || bytes > bound) && ns > 1) {
        uint32_t h = ns / 2;
        if ((r = add_group(ctx, op, tp, args, bound, cap, s0, h)) != VKLA_SUCCESS)
            return r;
        return add_group(ctx, op, tp, args, bound, cap, s0 + h, ns - h);
    }
    if (!fits || bytes > bound)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "%s: a sequence group does not fit", op->name);
    if (bytes > tp->piece_scratch)
        tp->piece_scratch = bytes;
    return push_piece(ctx, tp, cap, pc);
}

/* Adds the pieces of sequence s: the longest multiple of the chunk size that fits. */
static vkla_result add_chain(vkla_context *ctx, const vkla_op_impl *op, tplan *tp,
                             const void *args, uint64_t bound, uint32_t *cap, uint32_t s)
{
    uint64_t len = seq_len(tp, s), C = tp->C;
    uint64_t P = (len + C - 1) / C * C, bytes;
    if (P > MAX_PIECE_TOKENS)
        P = MAX_PIECE_TOKENS;
    bool fits;
    vkla_result r;
    for (;;) {
        piece pc = {s, 1, seq_start(tp, s), P < len ? P : len, true, false, false};
        if (!measure(ctx, op, tp, args, &pc, &bytes, &fits, &r))
            return r;
        if (fits && bytes <= bound)
            break;
        if (P <= C)
            return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                              "%s: one chunk of one sequence does not fit the device's "
                              "maxStorageBufferRange (%llu bytes) or the scratch bound (%llu bytes)",
                              op->name,
                              (unsigned long long)ctx->caps.props.limits.maxStorageBufferRange,
                              (unsigned long long)bound);
        /* shrink by the larger overshoot, to a multiple of the chunk size */
        uint64_t np = fits ? (uint64_t)((double)P * (double)bound / (double)bytes) : P * 7 / 8;
        np = np / C * C;
        P = np >= P ? P - C : (np < C ? C : np);
    }
    if (bytes > tp->piece_scratch)
        tp->piece_scratch = bytes;
    uint32_t m = (uint32_t)((len + P - 1) / P);
    if (m > tp->max_chain)
        tp->max_chain = m;
    for (uint32_t j = 0; j < m; j++) {
        uint64_t t0 = j * P;
        piece pc = {s, 1, seq_start(tp, s) + t0, (len - t0) < P ? len - t0 : P, true, j == 0,
                    j + 1 == m};
        if ((r = push_piece(ctx, tp, cap, pc)) != VKLA_SUCCESS)
            return r;
    }
    return VKLA_SUCCESS;
}

static void tplan_free(tplan *tp)
{
    free(tp->pieces);
    tp->pieces = NULL;
}

static vkla_result make_tplan(const vkla_op_impl *op, vkla_context *ctx, const void *args,
                              tplan *tp, const vkla_tsplit_desc *d)
{
    memset(tp, 0, sizeof(*tp));
    tp->d = d;
    uint64_t full;
    vkla_result r = op->scratch(ctx, args, &full); /* every check of the op */
    if (r != VKLA_SUCCESS)
        return r;
    /* the scratch bound: every window an op binds inside its scratch then fits one range */
    uint64_t bound = ctx->scratch_limit;
    uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    if (bound > range - 256)
        bound = range - 256;
    const char *f = (const char *)args + d->fwd;
    const vkla_tensor *q = cfield(args, d->tok[0]);
    tp->cu = *(const int32_t *const *)(f + d->cu);
    tp->varlen = tp->cu != NULL;
    tp->B = (uint32_t)q->shape[0];
    tp->T = q->shape[1];
    tp->N = tp->varlen ? *(const uint32_t *)(f + d->num_seqs) : tp->B;
    tp->C = *(const uint32_t *)(f + d->chunk_size);
    if (!tp->C)
        tp->C = 64;
    tp->piece_scratch = full;
    if (d->args_size > sizeof(argbuf))
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "%s: args too large to split", op->name);
    {
        argbuf buf;
        memcpy(buf.c, args, d->args_size); /* the call as given */
        /* the longest sequence, one row and one head: the windows of the op's own splits */
        uint64_t longest = 0;
        for (uint32_t s = 0; s < tp->N; s++)
            if (seq_len(tp, s) > longest)
                longest = seq_len(tp, s);
        piece one = {0, 1, 0, longest, true, true, true};
        for (uint32_t i = 0; i < d->ntok; i++)
            if (!(d->whole_tok & (1u << i)))
                cut_tokens(field(buf.c, d->tok[i]), tp, &one);
        if (piece_fits(ctx, tp, buf.c) && full <= bound && longest <= MAX_PIECE_TOKENS) {
            tp->direct = true;
            return VKLA_SUCCESS;
        }
    }
    if (d->can_split && (r = d->can_split(ctx, args)) != VKLA_SUCCESS)
        return r;
    for (uint32_t i = 0; i < d->nstate; i++) {
        d->state_shape(f, i, &tp->state_ndim[i], tp->state_shape[i]);
        tp->state_elems[i] = tp->state_ndim[i] ? 1 : 0;
        for (uint32_t k = 0; k < tp->state_ndim[i]; k++)
            tp->state_elems[i] *= tp->state_shape[i][k];
    }
    if (d->sum && cfield(args, d->sum)->buffer)
        tp->sum_elems = cfield(args, d->sum)->shape[0];

    /* sequences longer than the longest piece go in chains, the others in groups; a group
     * grows while its scratch, estimated from its chunks, stays in the bound */
    tp->piece_scratch = 0;
    uint32_t cap = 0;
    uint32_t g0 = 0, gn = 0;
    uint64_t gchunks = 0;
    bool alone = false, fits;
    double per_chunk = 0; /* scratch per chunk, estimated from the first sequence */
    for (uint32_t s = 0; s <= tp->N; s++) {
        bool end = s == tp->N;
        uint64_t len = end ? 0 : seq_len(tp, s), ch = (len + tp->C - 1) / tp->C;
        if (!end && (tp->varlen || s == 0)) { /* rows without varlen are all alike */
            piece one = whole(tp, s, 1);
            uint64_t b1;
            if (!measure(ctx, op, tp, args, &one, &b1, &fits, &r))
                goto fail;
            alone = !fits || b1 > bound || len > MAX_PIECE_TOKENS;
            if (s == 0)
                per_chunk = (double)b1 / (double)(ch ? ch : 1);
        }
        bool full_group = gn && (double)(gchunks + ch + 1) * per_chunk > (double)bound;
        if (gn && (end || alone || full_group)) {
            if ((r = add_group(ctx, op, tp, args, bound, &cap, g0, gn)) != VKLA_SUCCESS)
                goto fail;
            gn = 0;
            gchunks = 0;
        }
        if (end)
            break;
        if (alone) {
            if ((r = add_chain(ctx, op, tp, args, bound, &cap, s)) != VKLA_SUCCESS)
                goto fail;
            continue;
        }
        if (!gn)
            g0 = s;
        gn++;
        gchunks += ch ? ch : 1;
    }

    /* scratch: one call's, then the state slots */
    uint64_t al = vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    uint64_t off = vkla__align_up(tp->piece_scratch, al);
    for (uint32_t i = 0; i < d->nstate; i++)
        for (int k = 0; k < 2; k++) {
            tp->off_carry[i][k] = off;
            off = vkla__align_up(off + tp->state_elems[i] * 4, al);
        }
    if (d->backward) {
        tp->off_bstate = off;
        off = vkla__align_up(off + (uint64_t)tp->max_chain * tp->state_elems[0] * 4, al);
        for (int k = 0; k < 2; k++) {
            tp->off_dcarry[k] = off;
            off = vkla__align_up(off + tp->state_elems[0] * 4, al);
        }
        tp->off_sum = off;
        off = vkla__align_up(off + tp->sum_elems * 4, al);
    }
    tp->total = off;
    return VKLA_SUCCESS;
fail:
    tplan_free(tp);
    return r;
}

vkla_result vkla__tsplit_scratch(const vkla_tsplit_desc *d, vkla_context *ctx, const void *args,
                                 uint64_t *bytes)
{
    const vkla_op_impl *op = d->one;
    tplan tp;
    vkla_result r = make_tplan(op, ctx, args, &tp, d);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = tp.direct ? tp.piece_scratch : tp.total;
    tplan_free(&tp);
    return VKLA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Recording                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* acc[i] += x[i] for the n f32 of two [n] views. */
static vkla_result accumulate(vkla_context *ctx, VkCommandBuffer cmd, const vkla_tensor *acc,
                              vkla_buffer *xbuf, uint64_t xoff, uint64_t n)
{
    vkla_launch l;
    memset(&l, 0, sizeof(l));
    vkla_bind b[2] = {
        vkla__bind_region(acc->buffer, acc->offset, 4, VKLA_ROWS_WHOLE, 0, 0, 0, n * 4),
        vkla__bind_region(xbuf, xoff, 4, VKLA_ROWS_WHOLE, 0, 0, 0, n * 4)};
    uint32_t spec[1] = {64};
    vkla_result r = vkla__get_pipeline(ctx, "common/accumulate", spec, 1, 2, 0, &l.pipe);
    if (r != VKLA_SUCCESS)
        return r;
    l.nbind = 2;
    l.binds = b;
    l.push[0] = (uint32_t)n;
    l.push_words = 3;
    l.base_word[0] = 1;
    l.base_word[1] = 2;
    l.split_word = -1;
    l.grid_x = (uint32_t)((n + 63) / 64);
    l.grid_z = VKLA_GRID_SEQS;
    vkla_seqs s;
    memset(&s, 0, sizeof(s));
    s.n = 1;
    const vkla_split all = {0, 1, 0, 1};
    vkla__compute_barrier(ctx, cmd);
    return vkla__launch(ctx, cmd, &s, &all, &l);
}

typedef struct rec {
    const vkla_op_impl *op;
    vkla_context *ctx;
    VkCommandBuffer cmd;
    const tplan *tp;
    const void *args;
    vkla_buffer *scr;
    uint64_t soff;
    uint32_t calls;   /* calls recorded so far (the summed output) */
} rec;

/* One call of the op over a piece; states and state gradients as given in *pa. */
static vkla_result record_call(rec *rc, void *pa)
{
    const vkla_tsplit_desc *d = rc->tp->d;
    vkla_tensor *sum = d->sum ? field(pa, d->sum) : NULL;
    bool add = sum && sum->buffer && rc->calls > 0;
    vkla_tensor user;
    if (add) {
        user = *sum;
        *sum = vkla_tensor_make(rc->scr, rc->soff + rc->tp->off_sum, VKLA_DTYPE_F32, 1,
                                sum->shape);
    }
    vkla_result r = rc->op->record(rc->ctx, rc->cmd, pa, false);
    rc->calls++;
    if (r == VKLA_SUCCESS && add)
        r = accumulate(rc->ctx, rc->cmd, &user, rc->scr, rc->soff + rc->tp->off_sum,
                       rc->tp->sum_elems);
    return r;
}

static vkla_result record_forward(rec *rc)
{
    const tplan *tp = rc->tp;
    const vkla_tsplit_desc *d = tp->d;
    argbuf buf;
    vkla_result r = VKLA_SUCCESS;
    uint32_t j = 0; /* piece within its chain */
    for (uint32_t p = 0; p < tp->npieces && r == VKLA_SUCCESS; p++) {
        const piece *pc = &tp->pieces[p];
        int32_t *cu = malloc(((size_t)pc->ns + 1) * sizeof(int32_t));
        if (!cu)
            return vkla__fail(rc->ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
        piece_args(tp, rc->args, pc, buf.c, cu, rc->scr, rc->soff);
        if (pc->chain) {
            j = pc->first ? 0 : j + 1;
            for (uint32_t i = 0; i < d->nstate; i++) {
                if (!tp->state_ndim[i])
                    continue;
                if (!pc->first)
                    *field(buf.c, d->s_in[i]) =
                        slot(tp, rc->scr, rc->soff + tp->off_carry[i][(j + 1) % 2], i);
                if (!pc->last)
                    *field(buf.c, d->s_out[i]) =
                        slot(tp, rc->scr, rc->soff + tp->off_carry[i][j % 2], i);
            }
        }
        r = record_call(rc, buf.c);
        free(cu);
    }
    return r;
}

/* The pieces of one chain, [p0, p0 + m), backward. */
static vkla_result record_chain_backward(rec *rc, uint32_t p0, uint32_t m)
{
    const tplan *tp = rc->tp;
    const vkla_tsplit_desc *d = tp->d;
    argbuf buf;
    vkla_result r = VKLA_SUCCESS;
    const uint64_t bstate = rc->soff + tp->off_bstate, selems = tp->state_elems[0] * 4;
    /* forward state pass: the state entering piece j goes to slot j (j >= 1) */
    for (uint32_t j = 0; j + 1 < m && r == VKLA_SUCCESS; j++) {
        piece_args(tp, rc->args, &tp->pieces[p0 + j], buf.c, NULL, rc->scr, rc->soff);
        char *f = buf.c + d->fwd;
        if (j)
            *field(f, d->s_in[0]) = slot(tp, rc->scr, bstate + j * selems, 0);
        *field(f, d->s_out[0]) = slot(tp, rc->scr, bstate + (j + 1) * selems, 0);
        for (uint32_t i = 1; i < d->nstate; i++)
            memset(field(f, d->s_out[i]), 0, sizeof(vkla_tensor));
        *(vkla_buffer **)(f + d->fscratch) = rc->scr;
        *(uint64_t *)(f + d->fscratch_offset) = rc->soff;
        r = d->states->record(rc->ctx, rc->cmd, f, false);
    }
    /* backward pieces, last first */
    for (uint32_t jj = m; jj-- > 0 && r == VKLA_SUCCESS;) {
        piece_args(tp, rc->args, &tp->pieces[p0 + jj], buf.c, NULL, rc->scr, rc->soff);
        char *f = buf.c + d->fwd;
        if (jj)
            *field(f, d->s_in[0]) = slot(tp, rc->scr, bstate + jj * selems, 0);
        if (jj + 1 < m)
            *field(buf.c, d->dht) =
                slot(tp, rc->scr, rc->soff + tp->off_dcarry[(jj + 1) % 2], 0);
        if (jj)
            *field(buf.c, d->dh0) = slot(tp, rc->scr, rc->soff + tp->off_dcarry[jj % 2], 0);
        r = record_call(rc, buf.c);
    }
    return r;
}

vkla_result vkla__tsplit_record(const vkla_tsplit_desc *d, vkla_context *ctx, VkCommandBuffer cmd,
                                const void *args, bool run_mode)
{
    const vkla_op_impl *op = d->one;
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    tplan tp;
    vkla_result r = make_tplan(op, ctx, args, &tp, d);
    if (r != VKLA_SUCCESS)
        return r;
    if (tp.direct) {
        tplan_free(&tp);
        return op->record(ctx, cmd, args, run_mode);
    }
    vkla_buffer *scr;
    uint64_t soff;
    r = vkla__resolve_scratch(ctx, op->name, tp.total,
                              *(vkla_buffer *const *)((const char *)args + d->scratch),
                              *(const uint64_t *)((const char *)args + d->scratch_offset),
                              run_mode, 16, &scr, &soff);
    if (r != VKLA_SUCCESS) {
        tplan_free(&tp);
        return r;
    }
    rec rc = {op, ctx, cmd, &tp, args, scr, soff, 0};
    if (!d->backward) {
        r = record_forward(&rc);
    } else {
        argbuf buf;
        for (uint32_t p = 0; p < tp.npieces && r == VKLA_SUCCESS;) {
            const piece *pc = &tp.pieces[p];
            if (pc->chain) {
                uint32_t m = 1;
                while (!tp.pieces[p + m - 1].last)
                    m++;
                r = record_chain_backward(&rc, p, m);
                p += m;
                continue;
            }
            int32_t *cu = malloc(((size_t)pc->ns + 1) * sizeof(int32_t));
            if (!cu) {
                r = vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
                break;
            }
            piece_args(&tp, args, pc, buf.c, cu, scr, soff);
            r = record_call(&rc, buf.c);
            free(cu);
            p++;
        }
    }
    tplan_free(&tp);
    return r;
}
