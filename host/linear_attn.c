/* Causal linear attention (SPEC section 1): argument checks, scratch layout, and the recurrent
 * and chunk forms. Kernels: shaders/linear_attn/. */
#include "linear_attn.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP "linear_attn"

static const int base_words[B_COUNT] = {4, 5, 6, 7, 20, 21, 22, 23, 24, 25, 26, -1, -1, 27, 28};

vkla_result vkla__la_make_plan(vkla_context *ctx, const vkla_linear_attn_args *a, vkla_la_plan *p)
{
    memset(p, 0, sizeof(*p));
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!a)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": args is NULL");
    p->form = a->form == VKLA_FORM_DEFAULT ? VKLA_FORM_CHUNK : a->form;
    if (p->form != VKLA_FORM_CHUNK && p->form != VKLA_FORM_RECURRENT)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": form %d is not chunk or recurrent",
                          (int)a->form);
    const vkla_tensor *q = &a->q;
    if (!q->buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": tensor q is missing (buffer NULL)");
    if (q->ndim != 4)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, OP ": q must be [B,T,H,K] (got %u dims)", q->ndim);
    vkla_result r = vkla__check_tensor(ctx, OP, "q", q, 4, q->shape, FLOAT_DTYPES);
    if (r != VKLA_SUCCESS)
        return r;
    if (!a->v.buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": tensor v is missing (buffer NULL)");
    if (a->v.ndim != 4)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, OP ": v must be [B,T,H,V] (got %u dims)", a->v.ndim);
    if (q->shape[0] > UINT32_MAX || q->shape[1] > UINT32_MAX || q->shape[2] > 65535)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, OP ": B, T or H too large");
    p->B = (uint32_t)q->shape[0];
    p->T = (uint32_t)q->shape[1];
    p->H = (uint32_t)q->shape[2];
    uint64_t K = q->shape[3], V = a->v.shape[3];
    if (K > MAX_DIM || V > MAX_DIM)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          OP ": K = %llu, V = %llu; the maximum is %u", (unsigned long long)K,
                          (unsigned long long)V, MAX_DIM);
    p->K = (uint32_t)K;
    p->V = (uint32_t)V;
    p->dtype = q->dtype;
    uint32_t dmask = 1u << q->dtype;
    uint64_t sk[4] = {p->B, p->T, p->H, K}, sv[4] = {p->B, p->T, p->H, V};
    if ((r = vkla__check_tensor(ctx, OP, "k", &a->k, 4, sk, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if ((r = vkla__check_tensor(ctx, OP, "v", &a->v, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if ((r = vkla__check_tensor(ctx, OP, "o", &a->o, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if (!(dmask & (1u << a->k.dtype)) || !(dmask & (1u << a->v.dtype)) || !(dmask & (1u << a->o.dtype)))
        return vkla__fail(ctx, VKLA_ERROR_DTYPE_MISMATCH,
                          OP ": q, k, v and o must share one dtype (q %s, k %s, v %s, o %s)",
                          vkla_dtype_name(q->dtype), vkla_dtype_name(a->k.dtype),
                          vkla_dtype_name(a->v.dtype), vkla_dtype_name(a->o.dtype));
    if (p->dtype != VKLA_DTYPE_F32 && !ctx->caps.storage16)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          OP ": %s tensors need storageBuffer16BitAccess, which this device/context lacks",
                          vkla_dtype_name(p->dtype));

    r = vkla__seqs_init(ctx, &p->seqs, p->B, p->T, a->cu_seqlens, a->num_seqs, 0);
    if (r != VKLA_SUCCESS)
        return r;
    p->N = p->seqs.n;
    if (a->cu_seqlens)
        p->flags |= F_VARLEN;

    uint64_t sg[3] = {p->B, p->T, p->H}, sgam[1] = {p->H}, sgk[4] = {p->B, p->T, p->H, K};
    uint64_t sh[4] = {p->N, p->H, K, V}, sz[3] = {p->N, p->H, K};
    if ((r = vkla__check_f32_opt(ctx, OP, "g", &a->g, 3, sg,
                                 F_G, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "g_gamma", &a->g_gamma, 1, sgam,
                                 F_GAMMA, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "gk", &a->gk, 4, sgk,
                                 F_GK, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "h0", &a->h0, 4, sh,
                                 F_H0, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "ht", &a->ht, 4, sh,
                                 F_HT, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "z0", &a->z0, 3, sz,
                                 F_Z0, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "zt", &a->zt, 3, sz,
                                 F_ZT, &p->flags)) != VKLA_SUCCESS)
        goto fail;
    if ((p->flags & F_Z0) && (p->flags & F_ZT) && a->z0.buffer->buffer == a->zt.buffer->buffer &&
        a->z0.buffer->base + a->z0.offset < a->zt.buffer->base + a->zt.offset + (uint64_t)p->N * p->H * K * 4 &&
        a->zt.buffer->base + a->zt.offset < a->z0.buffer->base + a->z0.offset + (uint64_t)p->N * p->H * K * 4) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": z0 and zt overlap; pass distinct tensors");
        goto fail;
    }
    if (a->normalize)
        p->flags |= F_NORM;
    else if (p->flags & (F_Z0 | F_ZT)) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": z0/zt are only used with normalize");
        goto fail;
    }
    p->scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)p->K);
    p->eps = a->eps != 0.0f ? a->eps : 1e-6f;
    if (!isfinite(p->scale) || !isfinite(p->eps) || p->eps < 0) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": scale and eps must be finite (eps >= 0)");
        goto fail;
    }
    p->C = a->chunk_size ? a->chunk_size : 64;
    if (p->C != 16 && p->C != 32 && p->C != 64) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": chunk_size %u is not 16, 32 or 64",
                       a->chunk_size);
        goto fail;
    }
    p->VP = p->V + ((p->flags & F_NORM) ? 1 : 0);
    p->KD = (p->flags & F_GK) ? p->K : 1;

    /* scratch layout */
    uint64_t al = vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    uint64_t off = 0;
    if (p->form == VKLA_FORM_CHUNK) {
        vkla__seqs_free(&p->seqs);
        r = vkla__seqs_init(ctx, &p->seqs, p->B, p->T, a->cu_seqlens, a->num_seqs, p->C);
        if (r != VKLA_SUCCESS)
            goto fail;
    }
    if (p->flags & F_VARLEN) {
        p->off_seq = off;
        off = vkla__align_up(off + (uint64_t)p->N * 16, al);
        if (p->form == VKLA_FORM_CHUNK) {
            p->off_chunk = off;
            off = vkla__align_up(off + p->seqs.nchunks * 8, al);
        }
    }
    if (p->form == VKLA_FORM_CHUNK) {
        p->off_state = off;
        off = vkla__align_up(off + (uint64_t)p->H * p->seqs.nchunks * p->K * p->VP * 4, al);
        p->off_decay = off;
        off = vkla__align_up(off + (uint64_t)p->H * p->seqs.nchunks * p->KD * 4, al);
    }
    p->scratch_bytes = off;
    return VKLA_SUCCESS;
fail:
    vkla__seqs_free(&p->seqs);
    return r;
}

void vkla__la_fill_push(const vkla_la_plan *p, const vkla_linear_attn_args *a, vkla_launch *l)
{
    memset(l->push, 0, sizeof(l->push));
    l->push[W_T] = p->T;
    const vkla_tensor *ts[4] = {&a->q, &a->k, &a->v, &a->o};
    for (int i = 0; i < 4; i++) {
        uint64_t st[VKLA_MAX_DIMS];
        vkla__tensor_strides(ts[i], st);
        for (int d = 0; d < 3; d++)
            l->push[W_STRIDES + i * 3 + d] = (uint32_t)st[d];
    }
    memcpy(&l->push[W_SCALE], &p->scale, 4);
    memcpy(&l->push[W_EPS], &p->eps, 4);
    l->push[W_NCHUNKS] = (uint32_t)p->seqs.nchunks;
    l->push_words = W_COUNT;
    for (int i = 0; i < B_COUNT; i++)
        l->base_word[i] = base_words[i];
    l->split_word = W_SPLIT;
}

vkla_la_sizes vkla__la_sizes(const vkla_la_plan *p)
{
    vkla_la_sizes z;
    z.H = p->H;
    z.K = p->K;
    z.V = p->V;
    z.VP = p->VP;
    z.cs = vkla__chunk_sums(&p->seqs, p->C);
    z.tok = z.cs.s1;
    z.es = (double)vkla_dtype_size(p->dtype);
    z.gates = 4 * z.tok * z.H * (((p->flags & F_G) ? 1 : 0) + ((p->flags & F_GK) ? z.K : 0));
    z.states = 4 * z.H * z.cs.n * z.K * z.VP;
    return z;
}

const char *vkla__la_dtype_suffix(vkla_dtype d)
{
    return d == VKLA_DTYPE_F16 ? "f16" : d == VKLA_DTYPE_BF16 ? "bf16" : "f32";
}

void vkla__la_binds(const vkla_la_plan *p, const vkla_linear_attn_args *a, vkla_buffer *scr,
                    uint64_t soff, vkla_bind *binds)
{
    memset(binds, 0, sizeof(vkla_bind) * B_COUNT);
    binds[B_Q] = vkla__bind_tensor(&a->q, VKLA_ROWS_TOKENS);
    binds[B_K] = vkla__bind_tensor(&a->k, VKLA_ROWS_TOKENS);
    binds[B_V] = vkla__bind_tensor(&a->v, VKLA_ROWS_TOKENS);
    binds[B_O] = vkla__bind_tensor(&a->o, VKLA_ROWS_TOKENS);
    binds[B_G] = vkla__bind_tensor(&a->g, VKLA_ROWS_TOKENS);
    binds[B_GAMMA] = vkla__bind_tensor(&a->g_gamma, VKLA_ROWS_NONE);
    binds[B_GK] = vkla__bind_tensor(&a->gk, VKLA_ROWS_TOKENS);
    binds[B_H0] = vkla__bind_tensor(&a->h0, VKLA_ROWS_SEQS);
    binds[B_HT] = vkla__bind_tensor(&a->ht, VKLA_ROWS_SEQS);
    binds[B_Z0] = vkla__bind_tensor(&a->z0, VKLA_ROWS_SEQS);
    binds[B_ZT] = vkla__bind_tensor(&a->zt, VKLA_ROWS_SEQS);
    vkla__bind_seq_tables(&p->seqs, scr, soff + p->off_seq, soff + p->off_chunk, &binds[B_SEQ],
                          &binds[B_CHUNK]);
    if (p->form == VKLA_FORM_CHUNK) {
        uint64_t nc = p->seqs.nchunks;
        binds[B_STATE] = vkla__bind_region(scr, soff + p->off_state, 4, VKLA_ROWS_CHUNKS,
                                           (uint64_t)p->K * p->VP, nc * p->K * p->VP,
                                           (uint64_t)p->K * p->VP, 0);
        binds[B_DECAY] = vkla__bind_region(scr, soff + p->off_decay, 4, VKLA_ROWS_CHUNKS, p->KD,
                                           nc * p->KD, p->KD, 0);
    }
}

vkla_result vkla__la_upload_tables(vkla_context *ctx, VkCommandBuffer cmd, const vkla_la_plan *p,
                                   vkla_buffer *scr, uint64_t soff)
{
    return vkla__upload_seq_tables(ctx, cmd, &p->seqs, scr, soff + p->off_seq,
                                   soff + p->off_chunk);
}

/* Key rows per chunk_state workgroup: a multiple of 4, at most 32 */
static uint32_t state_rows(const vkla_la_plan *p)
{
    uint32_t k4 = (p->K + 3) / 4 * 4;
    return k4 < 32 ? k4 : 32;
}

vkla_result vkla__la_record_states(vkla_context *ctx, VkCommandBuffer cmd, const vkla_la_plan *p,
                                   const vkla_linear_attn_args *a, const vkla_bind *binds,
                                   const vkla_split *splits, uint32_t nsplit)
{
    vkla_launch l;
    memset(&l, 0, sizeof(l));
    vkla__la_fill_push(p, a, &l);
    l.nbind = B_COUNT;
    l.binds = binds;
    uint32_t rows = state_rows(p);
    uint32_t spec1[8] = {64, p->K, p->V, p->H, p->flags, p->C, rows, 1};
    uint32_t spec2[8] = {256, p->K, p->V, p->H, p->flags, p->C, 1, 1};
    vkla_pipeline *p1, *p2;
    char name[64];
    vkla_result r;
    snprintf(name, sizeof(name), "linear_attn/chunk_state.%s", vkla__la_dtype_suffix(p->dtype));
    if ((r = vkla__get_pipeline(ctx, name, spec1, 8, B_COUNT, 0, &p1)) != VKLA_SUCCESS)
        return r;
    if ((r = vkla__get_pipeline(ctx, "linear_attn/chunk_scan.f32", spec2, 8, B_COUNT, 0, &p2)) != VKLA_SUCCESS)
        return r;
    const vkla_la_sizes z = vkla__la_sizes(p);
    l.pipe = p1;
    l.grid_x = ((p->K + rows - 1) / rows) * ((p->VP + 63) / 64);
    l.grid_z = VKLA_GRID_CHUNKS;
    l.flops = z.H * 2 * z.K * z.VP * z.tok; /* K^T V per chunk */
    l.bytes = z.es * z.tok * z.H * (z.K + z.V) + z.gates + z.states;
    if ((r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
        return r;
    vkla__compute_barrier(ctx, cmd);
    l.flops = z.H * 2 * z.K * z.VP * z.cs.n; /* decay and add per chunk */
    l.bytes = 2 * z.states + 4 * z.H * p->N * z.K * z.VP * !!(p->flags & F_H0) +
              4 * z.H * p->N * z.K * z.VP * !!(p->flags & F_HT);
    l.pipe = p2;
    l.grid_x = (p->K * p->VP + 255) / 256;
    l.grid_z = VKLA_GRID_SEQS;
    return vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l);
}

/* The args of the state pass alone: the chunk form (whose state pass it is), o unused (bound
 * to v so the plan's checks see a valid view; it is not written). */
static vkla_linear_attn_args states_args(const vkla_linear_attn_args *a)
{
    vkla_linear_attn_args sa = *a;
    sa.form = VKLA_FORM_CHUNK;
    sa.o = sa.v;
    return sa;
}

/* states_only: the chunk form's state pass alone (o is not written; ht and zt are), which a
 * backward pass split along T runs to find the state entering each piece. */
static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd, const vkla_linear_attn_args *a,
                          bool run_mode, bool states_only)
{
    vkla_linear_attn_args sa;
    if (states_only) {
        sa = states_args(a);
        a = &sa;
    }
    vkla_la_plan p;
    vkla_result r = vkla__la_make_plan(ctx, a, &p);
    if (r != VKLA_SUCCESS)
        return r;
    vkla_split *splits = NULL;
    uint32_t nsplit = 0;
    vkla_buffer *scr;
    uint64_t soff;
    r = vkla__resolve_scratch(ctx, OP, p.scratch_bytes, a->scratch, a->scratch_offset, run_mode,
                              0, &scr, &soff);
    if (r != VKLA_SUCCESS)
        goto done;

    vkla_bind binds[B_COUNT];
    vkla__la_binds(&p, a, scr, soff, binds);
    if ((r = vkla__plan_splits(ctx, &p.seqs, p.H, binds, B_COUNT, &splits, &nsplit)) != VKLA_SUCCESS)
        goto done;

    vkla__order_after_earlier(ctx, cmd);
    if ((r = vkla__la_upload_tables(ctx, cmd, &p, scr, soff)) != VKLA_SUCCESS)
        goto done;

    vkla_launch l;
    memset(&l, 0, sizeof(l));
    vkla__la_fill_push(&p, a, &l);
    l.nbind = B_COUNT;
    l.binds = binds;
    const vkla_la_sizes z = vkla__la_sizes(&p);
    char name[64];
    if (p.form == VKLA_FORM_RECURRENT) {
        uint32_t ks = ctx->var.ks;
        uint32_t vt = 128 / ks ? 128 / ks : 1;
        if (vt > p.V)
            vt = p.V;
        if (ctx->var.subgroup && (ks * vt) % ks)
            vt = 1;
        uint32_t rows = (p.K + ks - 1) / ks;
        uint32_t spec[8] = {ks * vt, p.K, p.V, p.H, p.flags, ks, vt, rows};
        snprintf(name, sizeof(name), "linear_attn/recurrent.%s%s", vkla__la_dtype_suffix(p.dtype),
                 ctx->var.subgroup ? ".sg" : "");
        if ((r = vkla__get_pipeline(ctx, name, spec, 8, B_COUNT, ctx->var.subgroup ? ks : 0,
                                    &l.pipe)) != VKLA_SUCCESS)
            goto done;
        l.grid_x = (p.V + vt - 1) / vt;
        l.grid_z = VKLA_GRID_SEQS;
        l.flops = z.tok * z.H * (4 * z.K * z.V + (p.flags & (F_G | F_GAMMA | F_GK) ? z.K * z.V : 0) +
                                 ((p.flags & F_NORM) ? 4 * z.K + z.V : 0));
        l.bytes = z.es * z.tok * z.H * 2 * (z.K + z.V) + z.gates +
                  4 * z.H * p.N * z.K * z.V * (!!(p.flags & F_H0) + !!(p.flags & F_HT));
        r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l);
        goto done;
    }

    /* chunk form: contributions, then the state pass, then the outputs */
    if ((r = vkla__la_record_states(ctx, cmd, &p, a, binds, splits, nsplit)) != VKLA_SUCCESS ||
        states_only)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    /* without gk: 64 threads per (block of 32 query rows, 64 value columns); with gk: 2C
     * threads per 64 value columns (shaders/linear_attn/chunk_output*.comp) */
    const bool gk = (p.flags & F_GK) != 0;
    const uint32_t rows = gk || p.C < 32 ? p.C : 32;
    const uint32_t k4 = !gk && vkla__vec4_view(ctx, &a->k) ? F_K4 : 0;
    uint32_t spec3[8] = {gk ? 2 * p.C : 64, p.K, p.V, p.H, p.flags | k4, p.C, rows, 1};
    snprintf(name, sizeof(name), "linear_attn/chunk_output%s.%s", gk ? "_gk" : "",
             vkla__la_dtype_suffix(p.dtype));
    if ((r = vkla__get_pipeline(ctx, name, spec3, 8, B_COUNT, 0, &l.pipe)) != VKLA_SUCCESS)
        goto done;
    l.grid_x = (p.C / rows) * ((p.V + 63) / 64);
    l.grid_z = VKLA_GRID_CHUNKS;
    /* intra-chunk (Q K^T) and its product with V', (Q e^G) S, the division by q.z */
    l.flops = z.H * ((z.cs.s2 + z.cs.s1) * (z.K + z.VP) + 2 * z.K * z.VP * z.tok +
                     ((p.flags & F_NORM) ? z.V * z.tok : 0));
    l.bytes = z.es * z.tok * z.H * 2 * (z.K + z.V) + z.gates + z.states;
    r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l);
done:
    free(splits);
    vkla__seqs_free(&p.seqs);
    return r;
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    vkla_la_plan p;
    vkla_result r = vkla__la_make_plan(ctx, (const vkla_linear_attn_args *)args, &p);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = p.scratch_bytes;
    vkla__seqs_free(&p.seqs);
    return VKLA_SUCCESS;
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return record(ctx, cmd, (const vkla_linear_attn_args *)args, run_mode, false);
}

/* Calls split along T (host/tsplit.c) */

static vkla_result states_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    vkla_linear_attn_args sa = states_args((const vkla_linear_attn_args *)args);
    return op_scratch(ctx, &sa, bytes);
}

static vkla_result states_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                                 bool run_mode)
{
    return record(ctx, cmd, (const vkla_linear_attn_args *)args, run_mode, true);
}

const vkla_op_impl vkla__la_states_impl = {OP, states_scratch, states_record};

void vkla__la_state_shape(const void *args, uint32_t i, uint32_t *ndim, uint64_t *shape)
{
    const vkla_linear_attn_args *a = (const vkla_linear_attn_args *)args;
    *ndim = i == 0 ? 3 : a->normalize ? 2 : 0;
    shape[0] = a->q.shape[2];
    shape[1] = a->q.shape[3];
    shape[2] = a->v.shape[3];
}

#define FA(f) ((uint16_t)offsetof(vkla_linear_attn_args, f))
static const vkla_op_impl ONE = {OP, op_scratch, op_record};
static const vkla_tsplit_desc TSPLIT = {
    .one = &ONE,
    .args_size = sizeof(vkla_linear_attn_args),
    .tok = {FA(q), FA(k), FA(v), FA(o), FA(g), FA(gk)},
    .ntok = 6,
    .rows = {FA(h0), FA(ht), FA(z0), FA(zt)},
    .nrows = 4,
    .cu = FA(cu_seqlens), .num_seqs = FA(num_seqs), .chunk_size = FA(chunk_size),
    .s_in = {FA(h0), FA(z0)}, .s_out = {FA(ht), FA(zt)}, .nstate = 2,
    .scratch = FA(scratch), .scratch_offset = FA(scratch_offset),
    .fscratch = FA(scratch), .fscratch_offset = FA(scratch_offset),
    .state_shape = vkla__la_state_shape,
};
#undef FA

VKLA_TSPLIT_IMPL(IMPL, OP, TSPLIT);

vkla_result vkla_linear_attn_record(vkla_context *ctx, VkCommandBuffer cmd,
                                    const vkla_linear_attn_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_linear_attn_run(vkla_context *ctx, const vkla_linear_attn_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_linear_attn_scratch_size(vkla_context *ctx, const vkla_linear_attn_args *args,
                                          uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_linear_attn_bench(vkla_context *ctx, const vkla_linear_attn_args *args,
                                   uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
