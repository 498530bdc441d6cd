/* LION's chunk form on long sequences: a forward call whose scratch would pass the context's
 * scratch limit, whose (sequence, head) slab of some tensor exceeds maxStorageBufferRange, or
 * whose sequences are longer than LION_MAX_PIECE tokens runs as pieces of T (whole 64-token
 * tiles of one batch row), each an ordinary call of the op on views of the tensors.
 *
 * Every token sees every other token of its sequence, so a piece needs the states of both its
 * sides: the forward scan's state of all earlier tokens and the backward scan's state of all
 * later ones. Boundary slots 0..m (m pieces) hold them: slot p the forward state entering
 * piece p and the backward state leaving piece p towards the start (all tokens from piece p
 * on). A first sweep runs the state pass alone over pieces m-1 .. 1, which fills the backward
 * halves; the second runs the pieces in order, each starting its forward scan from slot p (the
 * previous piece wrote it) and its backward scan from slot p+1, and writing o. Slot 0's forward
 * half and slot m's backward half stay zero.
 *
 * Batch rows run one after another, each its own chain (the slots are zeroed again for each).
 * Scratch: one piece's scratch, then the m + 1 slots (heads x 2 x K x (V + 1) floats each); the
 * piece length is the longest whose total stays within the limit.
 *
 * Varlen calls, and the attn and rnn forms, are not split: they keep the op's own checks
 * (a slab beyond the range is refused with a message naming why). */
#include "lion_common.h"

#include <stdlib.h>
#include <string.h>

#define OP "lion"

typedef struct lplan {
    bool split;
    uint32_t P, m;              /* piece length (tokens), pieces */
    uint64_t piece_scratch, slot_bytes, off_slots, total;
    uint32_t nsh;
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

static vkla_lion_args piece_args(const vkla_lion_args *a, uint64_t b, uint64_t t0, uint64_t len,
                                 vkla_buffer *scr, uint64_t soff)
{
    vkla_lion_args pa = *a;
    vkla_tensor *ts[5] = {&pa.q, &pa.k, &pa.v, &pa.o, &pa.g};
    for (int i = 0; i < 5; i++)
        cut(ts[i], b, t0, len);
    pa.scratch = scr;
    pa.scratch_offset = soff;
    return pa;
}

/* Does one (row, head) slab of len tokens of every token tensor fit one storage-buffer range? */
static bool fits_range(vkla_context *ctx, const vkla_lion_args *a, uint64_t len)
{
    const uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    const uint64_t align = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    const vkla_tensor *ts[5] = {&a->q, &a->k, &a->v, &a->o, &a->g};
    for (int i = 0; i < 5; i++) {
        const vkla_tensor *t = ts[i];
        if (!t->buffer)
            continue;
        uint64_t st[VKLA_MAX_DIMS];
        vkla__tensor_strides(t, st);
        uint64_t last = (len - 1) * st[1] + (t->ndim > 3 ? (t->shape[3] - 1) * st[3] : 0);
        if ((last + 1) * vkla_dtype_size(t->dtype) + align > range)
            return false;
    }
    return true;
}

static vkla_result make_lplan(vkla_context *ctx, const vkla_lion_args *a, lplan *lp)
{
    memset(lp, 0, sizeof(*lp));
    uint64_t full;
    bool short_path = false;
    vkla_result r = vkla__lion_scratch_one(ctx, a, &full, &short_path); /* every check */
    if (r != VKLA_SUCCESS)
        return r;
    lp->total = full;
    const vkla_form form = a->form == VKLA_FORM_DEFAULT ? VKLA_FORM_CHUNK : a->form;
    const uint64_t T = a->q.shape[1];
    if (form != VKLA_FORM_CHUNK || a->cu_seqlens || short_path || T <= LION_TILE)
        return VKLA_SUCCESS;
    /* the scratch bound (the op binds its scratch per head and the slots two at a time, so
     * unlike the causal ops' splits the whole need not fit one storage-buffer range) */
    const uint64_t bound = ctx->scratch_limit;
    const uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    if (full <= bound && T <= LION_MAX_PIECE && fits_range(ctx, a, T))
        return VKLA_SUCCESS;

    const uint64_t H = a->q.shape[2];
    if (H >= 32768)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          OP ": a call split along T takes at most 32767 heads (got %llu)",
                          (unsigned long long)H);
    vkla_lion_dims d;
    vkla_lion_args one = piece_args(a, 0, 0, LION_TILE, NULL, 0);
    if ((r = vkla__lion_check(ctx, OP, &one, true, &d)) != VKLA_SUCCESS)
        return r;
    lp->slot_bytes = vkla__lion_bnd_slot_bytes(&d); /* one row */
    const uint64_t state_row = 4ull * 2 * ((d.K + 3) & ~3u) * ((d.V + 3) & ~3u); /* per chunk */
    const uint32_t C = d.C;
    vkla__seqs_free(&d.seqs);
    const uint64_t al =
        vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    if (2 * lp->slot_bytes + al > range)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          OP ": the states at a piece boundary (%llu heads, K = %u, V = %u) do "
                          "not fit maxStorageBufferRange; split the heads over calls",
                          (unsigned long long)H, d.K, d.V);
    /* the longest piece (whole tiles) whose scratch and slots fit the bound */
    const uint64_t tiles = (T + LION_TILE - 1) / LION_TILE;
    uint64_t prev = 0;
    for (uint64_t j = 2; j <= tiles; j++) {
        uint64_t P = (tiles + j - 1) / j * LION_TILE;
        if (P == prev || P > LION_MAX_PIECE)
            continue;
        prev = P;
        const uint64_t m = (T + P - 1) / P;
        if (!fits_range(ctx, a, P) || (P / C) * state_row + al > range)
            continue;
        vkla_lion_args pa = piece_args(a, 0, 0, P, NULL, 0);
        uint64_t ps;
        bool psh = false;
        if ((r = vkla__lion_scratch_one(ctx, &pa, &ps, &psh)) != VKLA_SUCCESS)
            return r;
        if (psh) /* the short path has no state scans to chain */
            continue;
        const uint64_t off = vkla__align_up(ps, al), total = off + (m + 1) * lp->slot_bytes;
        if (total > bound)
            continue;
        lp->split = true;
        lp->P = (uint32_t)P;
        lp->m = (uint32_t)m;
        lp->piece_scratch = ps;
        lp->off_slots = off;
        lp->total = total;
        lp->nsh = (uint32_t)H;
        return VKLA_SUCCESS;
    }
    return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                      OP ": no piece of whole 64-token tiles fits the scratch bound of %llu bytes "
                      "(vkla_context_set_scratch_limit) and maxStorageBufferRange",
                      (unsigned long long)bound);
}

vkla_result vkla__lion_tsplit_scratch(vkla_context *ctx, const vkla_lion_args *a, uint64_t *bytes)
{
    lplan lp;
    vkla_result r = make_lplan(ctx, a, &lp);
    if (r == VKLA_SUCCESS)
        *bytes = lp.total;
    return r;
}

vkla_result vkla__lion_tsplit_record(vkla_context *ctx, VkCommandBuffer cmd,
                                     const vkla_lion_args *a, bool run_mode)
{
    lplan lp;
    vkla_result r = make_lplan(ctx, a, &lp);
    if (r != VKLA_SUCCESS)
        return r;
    if (!lp.split)
        return vkla__lion_record_one(ctx, cmd, a, run_mode, NULL);
    vkla_buffer *scr;
    uint64_t soff;
    if ((r = vkla__resolve_scratch(ctx, OP, lp.total, a->scratch, a->scratch_offset, run_mode, 0,
                                   &scr, &soff)) != VKLA_SUCCESS)
        return r;
    const uint64_t T = a->q.shape[1];
    for (uint64_t b = 0; b < a->q.shape[0]; b++) {
        /* the slots start at zero (the two outer ends of the sequence) */
        vkla__order_after_earlier(ctx, cmd);
        ctx->vk.vkCmdFillBuffer(cmd, scr->buffer, scr->base + soff + lp.off_slots,
                                (lp.m + 1) * lp.slot_bytes, 0);
        vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                      VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        /* sweep 1 (i < m): the backward states at the piece boundaries, from the end; sweep 2:
         * the pieces in order, o written */
        for (uint32_t i = 1; i < 2 * lp.m; i++) {
            const bool states_only = i < lp.m;
            const uint32_t p = states_only ? lp.m - i : i - lp.m;
            const uint64_t t0 = (uint64_t)p * lp.P, len = T - t0 < lp.P ? T - t0 : lp.P;
            vkla_lion_args pa = piece_args(a, b, t0, len, scr, soff);
            vkla_lion_bnd bnd = {scr, soff + lp.off_slots + p * lp.slot_bytes, lp.nsh,
                                 states_only};
            if ((r = vkla__lion_record_one(ctx, cmd, &pa, false, &bnd)) != VKLA_SUCCESS)
                return r;
        }
    }
    return VKLA_SUCCESS;
}
