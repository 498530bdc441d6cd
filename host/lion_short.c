/* LION's short-sequence path: LION-LIT (no decay) with small K and V, where the tiled kernels
 * of the attn and chunk forms would be mostly padding. One lane per (sequence, head) keeps the
 * sequence's K x V' state in registers (shaders/lion/short.comp); the forward is one dispatch,
 * the backward one for dq and one for dk / dv, side by side. The host picks it from the shape
 * (vkla__lion_short_use); VKLA_LION_SHORT=0|1 forces it off or on where it applies. */
#include "lion_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHORT_LANES 32u   /* (sequence, head) lanes per workgroup */
#define SHORT_MAX_T 64u   /* longest sequence chosen automatically */

/* push constant words of short.comp */
enum { SW_T = 0, SW_SPLIT = 1, SW_BASE = 5, SW_STRIDES = 11, SW_SCALE = 29, SW_EPS = 30,
       SW_COUNT = 31 };

bool vkla__lion_short_use(vkla_context *ctx, const vkla_lion_dims *d)
{
    /* one dispatch of (sequence, head) lanes along x */
    const uint64_t lanes = (uint64_t)ctx->caps.props.limits.maxComputeWorkGroupCount[0] *
                           SHORT_LANES;
    if ((d->flags & (F_G | F_GAMMA)) || d->K > LION_SHORT_MAX_DIM || d->V > LION_SHORT_MAX_DIM ||
        (uint64_t)d->N * d->H > lanes)
        return false;
    const char *e = vkla__getenv("VKLA_LION_SHORT");
    if (e && (!strcmp(e, "0") || !strcmp(e, "1")))
        return e[0] == '1';
    for (uint32_t s = 0; s < d->seqs.n; s++)
        if (vkla__seq_len(&d->seqs, s) > SHORT_MAX_T)
            return false;
    return true;
}

uint64_t vkla__lion_short_scratch(vkla_context *ctx, const vkla_lion_dims *d)
{
    uint64_t al, off_seq, off_chunk;
    uint64_t n = vkla__lion_layout_tables(ctx, d, &al, &off_seq, &off_chunk);
    return n ? n + 16 : 0; /* + slack to align the start */
}

/* One dispatch of short.comp in mode (0 forward, 1 dq, 2 dk / dv) with flags. */
static vkla_result launch(vkla_context *ctx, VkCommandBuffer cmd, const vkla_lion_dims *d,
                          const vkla_bind *binds, const vkla_tensor *const *t,
                          const vkla_split *splits, uint32_t nsplit, uint32_t mode,
                          uint32_t flags)
{
    char name[32];
    snprintf(name, sizeof(name), "lion/short.%s", vkla_dtype_name(d->dtype));
    const uint32_t spec[5] = {SHORT_LANES, d->K, d->V, mode, flags};
    vkla_launch l;
    memset(&l, 0, sizeof(l));
    vkla_result r = vkla__get_pipeline(ctx, name, spec, 5, 8, 0, &l.pipe);
    if (r != VKLA_SUCCESS)
        return r;
    l.push[SW_T] = d->T;
    memcpy(&l.push[SW_SCALE], &d->scale, 4);
    memcpy(&l.push[SW_EPS], &d->eps, 4);
    for (int i = 0; i < VKLA_MAX_BINDINGS; i++)
        l.base_word[i] = i < 6 ? SW_BASE + i : -1;
    for (int i = 0; i < 6; i++) {
        uint64_t st[VKLA_MAX_DIMS] = {0};
        if (t[i] && t[i]->buffer)
            vkla__tensor_strides(t[i], st);
        for (int k = 0; k < 3; k++)
            l.push[SW_STRIDES + 3 * i + k] = (uint32_t)st[k];
    }
    l.push_words = SW_COUNT;
    l.split_word = SW_SPLIT;
    l.nbind = 8;
    l.binds = binds;
    l.grid_x = SHORT_LANES;
    l.grid_z = VKLA_GRID_SEQ_LANES;
    /* per token: the state pass and the output pass (K x V' each, V' = V + the ones column with
     * normalize); dk / dv adds the products through dS */
    const double tok = vkla__chunk_sums(&d->seqs, 0).s1 * d->H,
                 kv = (double)d->K * (d->V + ((flags & 1u) ? 1 : 0));
    const double io = tok * (double)vkla_dtype_size(d->dtype);
    l.flops = tok * kv * (mode == 2 ? 6.0 : 4.0);
    l.bytes = io * (mode == 0 ? 2.0 * d->K + 2.0 * d->V
                              : mode == 1 ? 3.0 * d->K + 2.0 * d->V : 2.0 * d->K + 4.0 * d->V);
    return vkla__launch_splits(ctx, cmd, &d->seqs, splits, nsplit, &l);
}

vkla_result vkla__lion_short_record(vkla_context *ctx, VkCommandBuffer cmd, const char *op,
                                    const vkla_lion_dims *d, const vkla_tensor *const *t,
                                    vkla_buffer *scratch, uint64_t scratch_offset, bool run_mode)
{
    vkla_buffer *scr;
    uint64_t soff;
    const uint64_t need = vkla__lion_short_scratch(ctx, d);
    vkla_result r = vkla__resolve_scratch(ctx, op, need, scratch, scratch_offset, run_mode, 0,
                                          &scr, &soff);
    if (r != VKLA_SUCCESS)
        return r;
    const uint64_t base = need ? vkla__align_up(scr->base + soff, 16) - scr->base : 0;
    uint64_t al, off_seq, off_chunk;
    vkla__lion_layout_tables(ctx, d, &al, &off_seq, &off_chunk);

    /* every tensor (q, k, v, dout, o or dq, dk, dv) and the tables, for the split plan */
    vkla_bind all[9];
    memset(all, 0, sizeof(all));
    for (int i = 0; i < 7; i++)
        if (t[i] && t[i]->buffer)
            all[i] = vkla__bind_tensor(t[i], VKLA_ROWS_TOKENS);
    vkla__bind_seq_tables(&d->seqs, scr, base + off_seq, base + off_chunk, &all[7], &all[8]);
    vkla_split *splits = NULL;
    uint32_t nsplit = 0;
    if ((r = vkla__plan_splits(ctx, &d->seqs, d->H, all, 9, &splits, &nsplit)) !=
            VKLA_SUCCESS ||
        (r = vkla__lion_tables(ctx, cmd, d, scr, base + off_seq, base + off_chunk)) !=
            VKLA_SUCCESS)
        goto done;

    const uint32_t flags = ((d->flags & F_NORM) ? 1u : 0u) | ((d->flags & F_VARLEN) ? 2u : 0u);
    /* forward: out = o; backward: dq, then dk and dv (their own dispatch). An output slot the
     * mode does not write is bound to the other output rather than to the shared placeholder
     * buffer, which a writable binding would order against every other use. */
    const bool bwd = all[3].buf != NULL;
    const int outs[2][2] = {{4, 4}, {5, 6}};
    for (int m = 0; m < (bwd ? 2 : 1); m++) {
        const int o1 = outs[m][0], o2 = outs[m][1];
        if (!all[o1].buf && !all[o2].buf)
            continue;
        const vkla_tensor *tt[6] = {t[0], t[1], t[2], t[3], all[o1].buf ? t[o1] : t[o2],
                                    all[o2].buf ? t[o2] : t[o1]};
        vkla_bind b[8];
        memcpy(b, all, 4 * sizeof(b[0]));
        b[4] = all[o1].buf ? all[o1] : all[o2];
        b[5] = all[o2].buf ? all[o2] : all[o1];
        b[6] = all[7];
        b[7] = all[8];
        const uint32_t mode = bwd ? 1u + (uint32_t)m : 0u;
        const uint32_t f = flags | (m && all[o1].buf ? 4u : 0u) | (m && all[o2].buf ? 8u : 0u);
        if ((r = launch(ctx, cmd, d, b, tt, splits, nsplit, mode, f)) != VKLA_SUCCESS)
            goto done;
    }
done:
    free(splits);
    return r;
}
