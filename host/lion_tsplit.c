/* LION on long sequences: a call of the chunk-form forward or of the backward pass whose scratch
 * would pass the context's scratch limit, whose (sequence, head) slab of some tensor exceeds
 * maxStorageBufferRange, or whose sequences are longer than LION_MAX_PIECE tokens runs as
 * pieces of T (whole 64-token tiles of one batch row), each an ordinary call of the op on
 * views of the tensors.
 *
 * Every token sees every other token of its sequence, so a piece needs the states of both its
 * sides: the forward scan's state of all earlier tokens and the backward scan's state of all
 * later ones. Boundary slots 0..m (m pieces) hold them: slot p the forward state entering
 * piece p and the backward state of all tokens from piece p on. chunk_state with F_BND starts
 * each scan of a piece from its slot and writes the state leaving it (shaders/lion/
 * chunk_state.comp). Slot 0's forward half and slot m's backward half stay zero.
 *
 * Forward: sweep 1 runs the state pass alone over pieces m-1 .. 1 (filling the backward
 * halves), sweep 2 the pieces in order (each forward half written by the piece before).
 *
 * Backward (two products with a scan each, dq's and dk's, docs/lion.md): the full pieces run
 * from the last to the first, because the decay gradient is a suffix sum over the sequence
 * (bwd_dg.comp carries the later pieces' part); a sweep over pieces 0 .. m-2 first fills the
 * forward halves of both scans' slots. Under normalize, dk's product needs do', which needs
 * the forward output of the piece and so dq's complete states: dq's scan then first runs
 * alone over pieces 0 .. m-2 and m-1 .. 1. dg_gamma is a running sum over all pieces and rows,
 * written after the last.
 *
 * Batch rows run one after another, each its own chain (the slots are zeroed for each).
 * Scratch: one piece's scratch, then the slots (heads x 2 x K x (V + 1) floats each, m + 1 per
 * scan), then the backward's [2, H] carry; the piece length is the longest whose total stays
 * within the limit.
 *
 * A forward call of the attn or rnn form that needs pieces runs them in the chunk form (the
 * three forms compute the same o; only the chunk form has states to carry between pieces).
 * Not split: varlen calls (the op's own checks then apply: a slab beyond the range is refused
 * with a message naming why). */
#include "lion_common.h"

#include <stdlib.h>
#include <string.h>

/* What a split call of either pass is made of. */
typedef struct lplan {
    bool split;
    uint32_t P, m;              /* piece length (tokens), pieces */
    uint64_t slot_bytes;        /* one boundary slot of one scan */
    uint32_t nscan;             /* scans with slots: 1 (forward) or 2 (backward) */
    uint64_t off_slots, off_carry, area, total;
    uint32_t H;
} lplan;

/* A view of row b, tokens [t0, t0 + len) of a [B,T,...] tensor (strides made explicit). */
static void cut(vkla_tensor *t, uint64_t b, uint64_t t0, uint64_t len)
{
    if (!t->buffer)
        return;
    uint64_t st[VKLA_MAX_DIMS];
    vkla__tensor_strides(t, st);
    for (uint32_t i = 0; i < t->ndim; i++)
        t->strides[i] = st[i];
    t->offset += (b * st[0] + t0 * st[1]) * vkla_dtype_size(t->dtype);
    t->shape[0] = 1;
    t->shape[1] = len;
}

/* The forward's pieces always run the chunk form (the forms compute the same; only the chunk
 * form has states to carry). */
static void cut_fwd(vkla_lion_args *pa, uint64_t b, uint64_t t0, uint64_t len)
{
    vkla_tensor *ts[5] = {&pa->q, &pa->k, &pa->v, &pa->o, &pa->g};
    for (int i = 0; i < 5; i++)
        cut(ts[i], b, t0, len);
    pa->form = VKLA_FORM_CHUNK;
}

/* The call being split: the forward's args or the backward's (either may be NULL: the op's own
 * checks then report it). */
typedef struct call {
    bool backward;
    const vkla_lion_args *fwd;
    const vkla_lion_backward_args *bwd;
} call;

static void piece_args(const call *c, uint64_t b, uint64_t t0, uint64_t len, vkla_buffer *scr,
                       uint64_t soff, vkla_lion_args *fa, vkla_lion_backward_args *ba)
{
    if (c->backward) {
        *ba = *c->bwd;
        cut_fwd(&ba->fwd, b, t0, len);
        vkla_tensor *ts[5] = {&ba->dout, &ba->dq, &ba->dk, &ba->dv, &ba->dg};
        for (int i = 0; i < 5; i++)
            cut(ts[i], b, t0, len);
        ba->scratch = scr;
        ba->scratch_offset = soff;
    } else {
        *fa = *c->fwd;
        cut_fwd(fa, b, t0, len);
        fa->scratch = scr;
        fa->scratch_offset = soff;
    }
}

static vkla_result one_scratch(vkla_context *ctx, const call *c, const vkla_lion_args *fa,
                               const vkla_lion_backward_args *ba, uint64_t *bytes, bool *sh)
{
    return c->backward ? vkla__lion_backward_scratch_one(ctx, ba, bytes, sh)
                       : vkla__lion_scratch_one(ctx, fa, bytes, sh);
}

/* Does one (row, head) slab of len tokens of every token tensor fit one storage-buffer range? */
static bool fits_range(vkla_context *ctx, const call *c, uint64_t len)
{
    const uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    const uint64_t align = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    const vkla_lion_args *f = c->backward ? &c->bwd->fwd : c->fwd;
    const vkla_tensor *ts[10] = {&f->q, &f->k, &f->v, c->backward ? NULL : &f->o, &f->g};
    if (c->backward) {
        ts[5] = &c->bwd->dout;
        ts[6] = &c->bwd->dq;
        ts[7] = &c->bwd->dk;
        ts[8] = &c->bwd->dv;
        ts[9] = &c->bwd->dg;
    }
    for (int i = 0; i < 10; i++) {
        const vkla_tensor *t = ts[i];
        if (!t || !t->buffer)
            continue;
        uint64_t st[VKLA_MAX_DIMS];
        vkla__tensor_strides(t, st);
        uint64_t last = (len - 1) * st[1] + (t->ndim > 3 ? (t->shape[3] - 1) * st[3] : 0);
        if ((last + 1) * vkla_dtype_size(t->dtype) + align > range)
            return false;
    }
    return true;
}

static vkla_result make_lplan(vkla_context *ctx, const call *c, const char *op, lplan *lp)
{
    memset(lp, 0, sizeof(*lp));
    uint64_t full;
    bool short_path = false;
    vkla_result r = one_scratch(ctx, c, c->fwd, c->bwd, &full, &short_path); /* every check */
    if (r != VKLA_SUCCESS)
        return r;
    const vkla_lion_args *f = c->backward ? &c->bwd->fwd : c->fwd;
    lp->total = full;
    const uint64_t T = f->q.shape[1];
    if (f->cu_seqlens || short_path || T <= LION_TILE)
        return VKLA_SUCCESS;
    /* the scratch bound (the op binds its scratch per head and the slots two at a time, so
     * unlike the causal ops' splits the whole need not fit one storage-buffer range) */
    const uint64_t bound = ctx->scratch_limit;
    const uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    if (full <= bound && T <= LION_MAX_PIECE && fits_range(ctx, c, T))
        return VKLA_SUCCESS;

    const uint64_t H = f->q.shape[2];
    if (H >= 32768)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "%s: a call split along T takes at most 32767 heads (got %llu)", op,
                          (unsigned long long)H);
    /* the scans' states are rows x cols (backward: the products' V' x K, forward: K x V) */
    const uint64_t K = f->q.shape[3];
    const uint64_t V1 = f->v.shape[3] + (c->backward && f->normalize ? 1 : 0);
    const uint64_t rows = c->backward ? V1 : K, cols = c->backward ? K : V1;
    lp->slot_bytes = vkla__lion_slot_bytes(H, rows, cols);
    lp->nscan = c->backward ? 2 : 1;
    lp->H = (uint32_t)H;
    const uint64_t C = f->chunk_size ? f->chunk_size : 64;
    /* one head's states of one chunk, both directions */
    const uint64_t state_row = 4 * 2 * ((rows + 3) & ~3ull) * ((cols + 3) & ~3ull);
    const uint64_t al =
        vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    if (2 * lp->slot_bytes + al > range)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "%s: the states at a piece boundary (%llu heads, K = %llu, V = %llu) "
                          "do not fit maxStorageBufferRange; split the heads over calls",
                          op, (unsigned long long)H, (unsigned long long)f->q.shape[3],
                          (unsigned long long)f->v.shape[3]);
    /* the longest piece (whole tiles) whose scratch and slots fit the bound */
    const uint64_t tiles = (T + LION_TILE - 1) / LION_TILE;
    uint64_t prev = 0;
    for (uint64_t j = 2; j <= tiles; j++) {
        uint64_t P = (tiles + j - 1) / j * LION_TILE;
        if (P == prev || P > LION_MAX_PIECE)
            continue;
        prev = P;
        const uint64_t m = (T + P - 1) / P;
        if (!fits_range(ctx, c, P) || (P / C) * state_row + al > range)
            continue;
        vkla_lion_args fa;
        vkla_lion_backward_args ba;
        piece_args(c, 0, 0, P, NULL, 0, &fa, &ba);
        uint64_t ps;
        bool psh = false;
        if ((r = one_scratch(ctx, c, &fa, &ba, &ps, &psh)) != VKLA_SUCCESS)
            return r;
        if (psh) /* the short path has no state scans to chain */
            continue;
        const uint64_t off = vkla__align_up(ps, al);
        const uint64_t slots = lp->nscan * (m + 1) * lp->slot_bytes;
        const uint64_t carry = c->backward ? 8 * H : 0;
        if (off + slots + carry > bound)
            continue;
        lp->split = true;
        lp->P = (uint32_t)P;
        lp->m = (uint32_t)m;
        lp->off_slots = off;
        lp->off_carry = off + slots;
        lp->area = slots + carry;
        lp->total = off + slots + carry;
        return VKLA_SUCCESS;
    }
    return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                      "%s: no piece of whole 64-token tiles fits the scratch bound of %llu bytes "
                      "(vkla_context_set_scratch_limit) and maxStorageBufferRange",
                      op, (unsigned long long)bound);
}

/* Zero fill of [off, off + size) of the scratch, ordered after earlier work and before the
 * compute work that follows. */
static void zero(vkla_context *ctx, VkCommandBuffer cmd, vkla_buffer *scr, uint64_t off,
                 uint64_t size)
{
    vkla__order_after_earlier(ctx, cmd);
    ctx->vk.vkCmdFillBuffer(cmd, scr->buffer, scr->base + off, size, 0);
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

static uint64_t piece_len(const lplan *lp, uint64_t T, uint32_t p)
{
    const uint64_t t0 = (uint64_t)p * lp->P;
    return T - t0 < lp->P ? T - t0 : lp->P;
}

static vkla_result split_scratch(vkla_context *ctx, const call *c, uint64_t *bytes)
{
    lplan lp;
    vkla_result r = make_lplan(ctx, c, c->backward ? "lion_backward" : "lion", &lp);
    if (r == VKLA_SUCCESS)
        *bytes = lp.total;
    return r;
}

/* The start of a split record: the plan, and either the call recorded whole (lp->split false)
 * or the scratch of its pieces. */
static vkla_result split_begin(vkla_context *ctx, VkCommandBuffer cmd, const call *c,
                               bool run_mode, lplan *lp, vkla_buffer **scr, uint64_t *soff)
{
    const char *op = c->backward ? "lion_backward" : "lion";
    vkla_result r = make_lplan(ctx, c, op, lp);
    if (r != VKLA_SUCCESS)
        return r;
    if (!lp->split)
        return c->backward ? vkla__lion_backward_record_one(ctx, cmd, c->bwd, run_mode, NULL)
                           : vkla__lion_record_one(ctx, cmd, c->fwd, run_mode, NULL);
    vkla_buffer *cs = c->backward ? c->bwd->scratch : c->fwd->scratch;
    uint64_t co = c->backward ? c->bwd->scratch_offset : c->fwd->scratch_offset;
    return vkla__resolve_scratch(ctx, op, lp->total, cs, co, run_mode, 0, scr, soff);
}

vkla_result vkla__lion_tsplit_scratch(vkla_context *ctx, const vkla_lion_args *a, uint64_t *bytes)
{
    const call c = {false, a, NULL};
    return split_scratch(ctx, &c, bytes);
}

vkla_result vkla__lion_tsplit_record(vkla_context *ctx, VkCommandBuffer cmd,
                                     const vkla_lion_args *a, bool run_mode)
{
    lplan lp;
    const call c = {false, a, NULL};
    vkla_buffer *scr;
    uint64_t soff;
    vkla_result r = split_begin(ctx, cmd, &c, run_mode, &lp, &scr, &soff);
    if (r != VKLA_SUCCESS || !lp.split)
        return r;
    const uint64_t T = a->q.shape[1];
    for (uint64_t b = 0; b < a->q.shape[0]; b++) {
        zero(ctx, cmd, scr, soff + lp.off_slots, lp.area);
        /* sweep 1 (i < m): the backward states at the piece boundaries, from the end; sweep 2:
         * the pieces in order, o written */
        for (uint32_t i = 1; i < 2 * lp.m; i++) {
            const bool states_only = i < lp.m;
            const uint32_t p = states_only ? lp.m - i : i - lp.m;
            vkla_lion_args pa;
            piece_args(&c, b, (uint64_t)p * lp.P, piece_len(&lp, T, p), scr, soff, &pa, NULL);
            vkla_lion_bnd bnd = {scr, soff + lp.off_slots + p * lp.slot_bytes, lp.H, states_only};
            if ((r = vkla__lion_record_one(ctx, cmd, &pa, false, &bnd)) != VKLA_SUCCESS)
                return r;
        }
    }
    return VKLA_SUCCESS;
}

vkla_result vkla__lion_backward_tsplit_scratch(vkla_context *ctx,
                                               const vkla_lion_backward_args *a, uint64_t *bytes)
{
    const call c = {true, NULL, a};
    return split_scratch(ctx, &c, bytes);
}

vkla_result vkla__lion_backward_tsplit_record(vkla_context *ctx, VkCommandBuffer cmd,
                                              const vkla_lion_backward_args *a, bool run_mode)
{
    lplan lp;
    const call c = {true, NULL, a};
    vkla_buffer *scr;
    uint64_t soff;
    vkla_result r = split_begin(ctx, cmd, &c, run_mode, &lp, &scr, &soff);
    if (r != VKLA_SUCCESS || !lp.split)
        return r;
    const uint64_t T = a->fwd.q.shape[1], B = a->fwd.q.shape[0];
    const uint64_t slots_q = soff + lp.off_slots, slots_k = slots_q + (lp.m + 1) * lp.slot_bytes;
    const uint64_t carry = soff + lp.off_carry;
    /* the sweeps of one row: {stage, first piece, last piece} (p runs up or down; m >= 2) */
    struct sweep {
        int stage;
        int64_t from, to;
    } sw[4];
    int nsw = 0;
    const int64_t m = lp.m;
    if (a->fwd.normalize) {
        sw[nsw++] = (struct sweep){LION_BWD_SCAN_Q, 0, m - 2};
        sw[nsw++] = (struct sweep){LION_BWD_SCAN_Q, m - 1, 1};
    }
    sw[nsw++] = (struct sweep){LION_BWD_SCANS, 0, m - 2};
    sw[nsw++] = (struct sweep){LION_BWD_ALL, m - 1, 0};
    for (uint64_t b = 0; b < B; b++) {
        /* every slot at zero, and the carry's suffix sum (its dg_gamma running sum only once) */
        if (b == 0) {
            zero(ctx, cmd, scr, slots_q, lp.area);
        } else {
            zero(ctx, cmd, scr, slots_q, carry - slots_q);
            zero(ctx, cmd, scr, carry + 4ull * lp.H, 4ull * lp.H);
        }
        for (int s = 0; s < nsw; s++) {
            const int64_t step = sw[s].to >= sw[s].from ? 1 : -1;
            for (int64_t p = sw[s].from;; p += step) {
                vkla_lion_backward_args pa;
                piece_args(&c, b, (uint64_t)p * lp.P, piece_len(&lp, T, (uint32_t)p), scr, soff,
                           NULL, &pa);
                vkla_lion_bwd_piece pc = {scr,
                                          slots_q + (uint64_t)p * lp.slot_bytes,
                                          slots_k + (uint64_t)p * lp.slot_bytes,
                                          carry,
                                          lp.H,
                                          sw[s].stage,
                                          sw[s].stage == LION_BWD_ALL && p == 0 && b + 1 == B};
                if ((r = vkla__lion_backward_record_one(ctx, cmd, &pa, false, &pc)) !=
                    VKLA_SUCCESS)
                    return r;
                if (p == sw[s].to)
                    break;
            }
        }
    }
    return VKLA_SUCCESS;
}
