/* Delta rule, DeltaNet and Gated DeltaNet (SPEC section 2): argument checks, scratch layout,
 * and the recurrent and chunk (WY / UT transform) forms. Kernels: shaders/delta_rule/. */
#include "delta_rule.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP "delta_rule"

vkla_result vkla__dr_plan(vkla_context *ctx, const vkla_delta_rule_args *a, bool backward,
                          vkla_dr_plan *p)
{
    const char *op = backward ? OP "_backward" : OP;
    memset(p, 0, sizeof(*p));
    p->backward = backward;
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!a)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: args is NULL", op);
    p->form = a->form == VKLA_FORM_DEFAULT ? VKLA_FORM_CHUNK : a->form;
    if (p->form != VKLA_FORM_CHUNK && p->form != VKLA_FORM_RECURRENT)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "%s: form %d is not chunk or recurrent", op,
                          (int)a->form);
    const vkla_tensor *q = &a->q;
    if (!q->buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: tensor q is missing (buffer NULL)", op);
    if (q->ndim != 4)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: q must be [B,T,H,K] (got %u dims)", op, q->ndim);
    vkla_result r = vkla__check_tensor(ctx, op, "q", q, 4, q->shape, FLOAT_DTYPES);
    if (r != VKLA_SUCCESS)
        return r;
    if (!a->v.buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: tensor v is missing (buffer NULL)", op);
    if (a->v.ndim != 4)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: v must be [B,T,HV,V] (got %u dims)", op, a->v.ndim);
    if (!a->beta.buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: tensor beta is missing (buffer NULL)", op);
    if (q->shape[0] > UINT32_MAX || q->shape[1] > UINT32_MAX || q->shape[2] > 65535 ||
        a->v.shape[2] > 65535)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "%s: B, T, H or HV too large", op);
    p->B = (uint32_t)q->shape[0];
    p->T = (uint32_t)q->shape[1];
    p->H = (uint32_t)q->shape[2];
    p->HV = (uint32_t)a->v.shape[2];
    if (p->HV == 0 || p->HV % p->H)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH,
                          "%s: v has %u heads, not a multiple of q's %u", op, p->HV, p->H);
    uint64_t K = q->shape[3], V = a->v.shape[3];
    if (K > MAX_DIM || V > MAX_DIM)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "%s: K = %llu, V = %llu; the maximum is %u", op, (unsigned long long)K,
                          (unsigned long long)V, MAX_DIM);
    p->K = (uint32_t)K;
    p->V = (uint32_t)V;
    p->dtype = q->dtype;
    uint32_t dmask = 1u << q->dtype;
    uint64_t sk[4] = {p->B, p->T, p->H, K}, sv[4] = {p->B, p->T, p->HV, V};
    if ((r = vkla__check_tensor(ctx, op, "k", &a->k, 4, sk, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if ((r = vkla__check_tensor(ctx, op, "v", &a->v, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    /* the backward pass ignores the forward's outputs (o, ht) */
    const vkla_tensor *o = backward ? &a->v : &a->o;
    if (!backward &&
        (r = vkla__check_tensor(ctx, op, "o", o, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if (!(dmask & (1u << a->k.dtype)) || !(dmask & (1u << a->v.dtype)) || !(dmask & (1u << o->dtype)))
        return vkla__fail(ctx, VKLA_ERROR_DTYPE_MISMATCH,
                          "%s: q, k, v%s must share one dtype (q %s, k %s, v %s, o %s)", op,
                          backward ? "" : " and o", vkla_dtype_name(q->dtype),
                          vkla_dtype_name(a->k.dtype), vkla_dtype_name(a->v.dtype),
                          vkla_dtype_name(o->dtype));
    if (p->dtype != VKLA_DTYPE_F32 && !ctx->caps.storage16)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "%s: %s tensors need storageBuffer16BitAccess, which this device/context lacks", op,
                          vkla_dtype_name(p->dtype));

    r = vkla__seqs_init(ctx, &p->seqs, p->B, p->T, a->cu_seqlens, a->num_seqs, 0);
    if (r != VKLA_SUCCESS)
        goto fail;
    p->N = p->seqs.n;
    if (a->cu_seqlens)
        p->flags |= F_VARLEN;

    uint64_t sb[3] = {p->B, p->T, p->HV}, sh[4] = {p->N, p->HV, K, V};
    uint32_t beta_flag = 0;
    if ((r = vkla__check_f32_opt(ctx, op, "beta", &a->beta, 3, sb,
                                 1, &beta_flag)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, op, "g", &a->g, 3, sb,
                                 F_G, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, op, "h0", &a->h0, 4, sh,
                                 F_H0, &p->flags)) != VKLA_SUCCESS ||
        (!backward && (r = vkla__check_f32_opt(ctx, op, "ht", &a->ht, 4, sh,
                                               F_HT, &p->flags)) != VKLA_SUCCESS))
        goto fail;
    if (a->l2norm)
        p->flags |= F_L2NORM;
    p->flags |= (vkla__vec4_view(ctx, &a->q) ? F_Q4 : 0) | (vkla__vec4_view(ctx, &a->k) ? F_K4 : 0) |
                (vkla__vec4_view(ctx, &a->v) ? F_V4 : 0) | (!backward && vkla__vec4_view(ctx, o) ? F_O4 : 0);
    p->scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)p->K);
    if (!isfinite(p->scale)) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "%s: scale must be finite", op);
        goto fail;
    }
    p->C = a->chunk_size ? a->chunk_size : 64;
    if (p->C != 16 && p->C != 32 && p->C != 64) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "%s: chunk_size %u is not 16, 32 or 64", op,
                       a->chunk_size);
        goto fail;
    }

    if (backward)
        p->form = VKLA_FORM_CHUNK; /* the backward is chunkwise for every form */

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
        /* work records (W, KD, U then V', per-token info) and the chunk states [K][V4], vec4 */
        p->K4 = (p->K + 3) / 4;
        p->V4 = (p->V + 3) / 4;
        p->work_rec = (uint64_t)p->C * (2 * p->K4 + p->V4 + 1);
        p->off_work = off;
        off = vkla__align_up(off + (uint64_t)p->HV * p->seqs.nchunks * p->work_rec * 16, al);
        p->off_state = off;
        off = vkla__align_up(off + (uint64_t)p->HV * p->seqs.nchunks * p->K * p->V4 * 16, al);
        if (backward) { /* T = (I + A)^-1 per chunk, [C][C/4] vec4 */
            p->off_tmat = off;
            off = vkla__align_up(off + (uint64_t)p->HV * p->seqs.nchunks * p->C * p->C * 4, al);
        }
    }
    p->scratch_bytes = off;
    return VKLA_SUCCESS;
fail:
    vkla__seqs_free(&p->seqs);
    return r;
}

static const int base_words[B_COUNT] = {9, 10, 11, 12, 13, 14, 15, 16, -1, -1, 17, 18, W_TMAT};

void vkla__dr_push(const vkla_dr_plan *p, const vkla_delta_rule_args *a, vkla_launch *l)
{
    memset(l->push, 0, sizeof(l->push));
    l->push[W_T] = p->T;
    l->push[W_FLAGS] = p->flags;
    l->push[W_GROUP] = p->HV / p->H;
    l->push[W_HV] = p->HV;
    memcpy(&l->push[W_SCALE], &p->scale, 4);
    l->push[W_NCHUNKS] = (uint32_t)p->seqs.nchunks;
    const vkla_tensor *ts[4] = {&a->q, &a->k, &a->v, &a->o};
    for (int i = 0; i < (p->backward ? 3 : 4); i++) {
        uint64_t st[VKLA_MAX_DIMS];
        vkla__tensor_strides(ts[i], st);
        for (int d = 0; d < 3; d++)
            l->push[W_STRIDES + i * 3 + d] = (uint32_t)st[d];
    }
    l->push_words = W_COUNT;
    for (int i = 0; i < B_COUNT; i++)
        l->base_word[i] = base_words[i];
    l->split_word = W_SPLIT;
}

const char *vkla__dr_dtype_suffix(vkla_dtype d)
{
    return d == VKLA_DTYPE_F16 ? "f16" : d == VKLA_DTYPE_BF16 ? "bf16" : "f32";
}

/* Tiles of the chunk scan (64 threads as rg row groups x 64/rg column groups): each thread
 * keeps 4 rs4 state rows and cn vec4 columns in registers, the workgroup a tile of 4 (64/rg) cn
 * value columns. The state tile and V' (C x tile) also sit in shared memory, which must fit
 * 32 KiB. Wider tiles and 8 x 8 thread grids read W, KD and the state fewer times; narrower
 * tiles give the sequential pass more workgroups. With sg, the column groups are the lanes of
 * one subgroup (64/rg = its size, at most 16: the kernel broadcasts from lanes 0 to 15); false
 * when those tiles do not fit. */
static bool scan_tiles(const vkla_dr_plan *p, uint32_t sg, uint32_t *cn, uint32_t *rs4, uint32_t *rg)
{
    uint32_t g = sg ? 64 / sg : p->K > 128 ? 16 : 8, cg = 64 / g, r = (p->K + 4 * g - 1) / (4 * g), c = 2;
    if (sg && (sg < 4 || sg > 16 || 64 % sg))
        return false;
    while (c > 1 && ((4 * g * r + p->C) * cg * c * 16 > SHARED_FLOATS * 4 || 2 * cg * c >= p->V ||
                     (uint64_t)p->N * p->HV * ((p->V + 4 * cg * c - 1) / (4 * cg * c)) < 4))
        c /= 2;
    *cn = c;
    *rs4 = r;
    *rg = g;
    return (4 * g * r + p->C) * cg * c * 16 <= SHARED_FLOATS * 4;
}

void vkla__dr_binds(const vkla_dr_plan *p, const vkla_delta_rule_args *a, vkla_buffer *scr,
                    uint64_t soff, vkla_bind *binds)
{
    memset(binds, 0, sizeof(*binds) * B_COUNT);
    binds[B_Q] = vkla__bind_tensor(&a->q, VKLA_ROWS_TOKENS);
    binds[B_K] = vkla__bind_tensor(&a->k, VKLA_ROWS_TOKENS);
    binds[B_Q].head_div = binds[B_K].head_div = p->HV / p->H; /* splits run over value heads */
    binds[B_V] = vkla__bind_tensor(&a->v, VKLA_ROWS_TOKENS);
    if (!p->backward) {
        binds[B_O] = vkla__bind_tensor(&a->o, VKLA_ROWS_TOKENS);
        binds[B_HT] = vkla__bind_tensor(&a->ht, VKLA_ROWS_SEQS);
    }
    binds[B_BETA] = vkla__bind_tensor(&a->beta, VKLA_ROWS_TOKENS);
    binds[B_G] = vkla__bind_tensor(&a->g, VKLA_ROWS_TOKENS);
    binds[B_H0] = vkla__bind_tensor(&a->h0, VKLA_ROWS_SEQS);
    vkla__bind_seq_tables(&p->seqs, scr, soff + p->off_seq, soff + p->off_chunk, &binds[B_SEQ],
                          &binds[B_CHUNK]);
    if (p->form == VKLA_FORM_CHUNK) {
        /* vec4 elements: the kernels index these as vec4 arrays */
        uint64_t nc = p->seqs.nchunks, kv = (uint64_t)p->K * p->V4, cc = (uint64_t)p->C * p->C / 4;
        binds[B_WORK] = vkla__bind_region(scr, soff + p->off_work, 16, VKLA_ROWS_CHUNKS,
                                          p->work_rec, nc * p->work_rec, p->work_rec, 0);
        binds[B_STATE] = vkla__bind_region(scr, soff + p->off_state, 16, VKLA_ROWS_CHUNKS, kv,
                                           nc * kv, kv, 0);
        if (p->backward)
            binds[B_TMAT] = vkla__bind_region(scr, soff + p->off_tmat, 16, VKLA_ROWS_CHUNKS, cc,
                                              nc * cc, cc, 0);
    }
}

vkla_dr_sizes vkla__dr_sizes(const vkla_dr_plan *p)
{
    vkla_dr_sizes z;
    z.HV = p->HV;
    z.K = p->K;
    z.V = p->V;
    z.cs = vkla__chunk_sums(&p->seqs, p->C);
    z.tok = z.cs.s1;
    double es = (double)vkla_dtype_size(p->dtype);
    z.qk = es * z.tok * p->H * 2 * z.K;
    z.vo = es * z.tok * z.HV * z.V;
    z.gates = 4 * z.tok * z.HV * (1 + ((p->flags & F_G) ? 1 : 0));
    z.states = 4 * z.HV * z.cs.n * z.K * z.V;
    z.work = 4 * z.HV * z.tok * (2 * z.K + z.V);
    return z;
}

vkla_result vkla__dr_begin(vkla_context *ctx, VkCommandBuffer cmd, const vkla_dr_plan *p,
                           vkla_buffer *scr, uint64_t soff)
{
    vkla__order_after_earlier(ctx, cmd);
    return vkla__upload_seq_tables(ctx, cmd, &p->seqs, scr, soff + p->off_seq,
                                   soff + p->off_chunk);
}

/* The state pass as one dispatch per chunk step (shaders/delta_rule/scan_vp.comp and
 * scan_state.comp) rather than chunk_scan.comp's loop over the chunks, with the flat kernel
 * variant: on CPU devices every read inside a loop is a loop over the lanes, and the
 * straight-line steps win once a step has enough work to pay for its two dispatches. Measured
 * on lavapipe (T = 2048, H = 4, the scan's kernels alone): K = 128 and 256 run 1.3x to 2.2x
 * faster as steps; K = 64 runs 1.2x to 1.3x faster in the loop, K = 96 ties. So: K > 96
 * (VKLA_SCAN_STEPS=0|1 forces either).
 * Not with varlen (sequences of different chunk counts), and at most 65536 steps (the step
 * travels in the flags word's high half). */
static bool step_scan(const vkla_context *ctx, const vkla_dr_plan *p)
{
    const bool want = ctx->var.scan_steps >= 0 ? ctx->var.scan_steps : ctx->var.flat && p->K > 96;
    return want && !(p->flags & F_VARLEN) && (p->T + p->C - 1) / p->C <= 65536;
}

static vkla_result scan_steps(vkla_context *ctx, VkCommandBuffer cmd, const vkla_dr_plan *p,
                              const vkla_split *splits, uint32_t nsplit, vkla_launch *l)
{
    /* rows per workgroup: scan_vp stages ra rows of W (K4 + 1 vec4s each) in shared memory;
     * scan_state keeps rb state rows in registers (64 rather than 32: half the workgroups,
     * each reading V' once for twice the rows, measured about 10% faster on lavapipe) */
    uint32_t ra = p->C < 32 ? p->C : 32, rb = 4 * p->K4 < 64 ? 4 * p->K4 : 64;
    while (ra > 4 && ra * (p->K4 + 1) * 16 > SHARED_FLOATS * 4)
        ra /= 2;
    const uint32_t tiles = (4 * p->V4 + 63) / 64, nsteps = (p->T + p->C - 1) / p->C;
    uint32_t spec_vp[7] = {64, p->K, p->V, p->C, ra, 0, 1};
    uint32_t spec_init[7] = {64, p->K, p->V, p->C, rb, 1, 1};
    uint32_t spec_st[7] = {64, p->K, p->V, p->C, rb, 0, 1};
    uint32_t spec_last[7] = {64, p->K, p->V, p->C, rb, 2, 1};
    vkla_pipeline *pvp, *pinit, *pst, *plast;
    vkla_result r;
    if ((r = vkla__get_pipeline(ctx, "delta_rule/scan_vp.f32", spec_vp, 7, B_COUNT, 0, &pvp)) != VKLA_SUCCESS ||
        (r = vkla__get_pipeline(ctx, "delta_rule/scan_state.f32", spec_init, 7, B_COUNT, 0, &pinit)) != VKLA_SUCCESS ||
        (r = vkla__get_pipeline(ctx, "delta_rule/scan_state.f32", spec_st, 7, B_COUNT, 0, &pst)) != VKLA_SUCCESS ||
        (r = vkla__get_pipeline(ctx, "delta_rule/scan_state.f32", spec_last, 7, B_COUNT, 0, &plast)) != VKLA_SUCCESS)
        return r;
    const double flops = l->flops, bytes = l->bytes;
    const uint32_t flags = l->push[W_FLAGS];
    l->grid_z = VKLA_GRID_SEQS;
    l->pipe = pinit;
    l->grid_x = ((p->K + rb - 1) / rb) * tiles;
    l->flops = 0;
    l->bytes = 4.0 * p->HV * p->N * p->K * p->V * (1 + !!(p->flags & F_H0));
    if ((r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, l)) != VKLA_SUCCESS)
        goto done;
    for (uint32_t m = 0; m < nsteps; m++) {
        vkla__compute_barrier(ctx, cmd);
        l->push[W_FLAGS] = flags | (m << 16);
        /* the op's model split evenly over the steps, half to each kernel */
        l->flops = flops / nsteps / 2;
        l->bytes = bytes / nsteps / 2;
        l->pipe = pvp;
        l->grid_x = (p->C / ra) * tiles;
        if ((r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, l)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
        l->pipe = m + 1 == nsteps ? plast : pst;
        l->grid_x = ((p->K + rb - 1) / rb) * tiles;
        if ((r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, l)) != VKLA_SUCCESS)
            goto done;
    }
done:
    l->push[W_FLAGS] = flags;
    return r;
}

vkla_result vkla__dr_prep_scan(vkla_context *ctx, VkCommandBuffer cmd, const vkla_dr_plan *p,
                               const vkla_split *splits, uint32_t nsplit, vkla_launch *l)
{
    uint32_t cn, rs4, rg;
    bool sg = ctx->var.subgroup && ctx->caps.subgroup_ballot && scan_tiles(p, ctx->var.ks, &cn, &rs4, &rg);
    if (!sg)
        scan_tiles(p, 0, &cn, &rs4, &rg);
    uint32_t svt = 4 * (64 / rg) * cn; /* value tile of the scan */
    uint32_t spec1[7] = {64, p->K, p->V, p->C, 1, 1, 1};
    uint32_t spec2[7] = {64, p->K, p->V, p->C, cn, rs4, rg};
    const char *ds = vkla__dr_dtype_suffix(p->dtype);
    char name[64];
    vkla_pipeline *p1, *p2;
    vkla_result r;
    snprintf(name, sizeof(name), "delta_rule/chunk_prep.%s", ds);
    if ((r = vkla__get_pipeline(ctx, name, spec1, 7, B_COUNT, 0, &p1)) != VKLA_SUCCESS)
        return r;
    snprintf(name, sizeof(name), "delta_rule/chunk_scan.%s%s", ds, sg ? ".sg" : "");
    if ((r = vkla__get_pipeline(ctx, name, spec2, 7, B_COUNT, sg ? ctx->var.ks : 0, &p2)) != VKLA_SUCCESS)
        return r;
    const vkla_dr_sizes z = vkla__dr_sizes(p);
    const vkla_chunk_sums cs = z.cs;
    l->pipe = p1;
    l->grid_x = 1;
    l->grid_z = VKLA_GRID_CHUNKS;
    /* A = strictly_lower(K K^T), T = (I + A)^-1, W = T (b e^G K), U = T (b V) */
    l->flops = z.HV * ((cs.s2 - cs.s1) * z.K + cs.s3 / 3 + (cs.s2 + cs.s1) * (z.K + z.V));
    l->bytes = z.qk / 2 + z.vo + z.gates + z.work;
    if ((r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, l)) != VKLA_SUCCESS)
        return r;
    vkla__compute_barrier(ctx, cmd);
    l->flops = z.HV * (4 * z.K * z.V * z.tok + 2 * z.K * z.V * cs.n); /* W S, K^T V', decay */
    l->bytes = z.work + z.states + 4 * z.HV * z.tok * z.V +
               4 * z.HV * p->N * z.K * z.V * (!!(p->flags & F_H0) + !!(p->flags & F_HT));
    if (step_scan(ctx, p))
        return scan_steps(ctx, cmd, p, splits, nsplit, l);
    l->pipe = p2;
    l->grid_x = (p->V + svt - 1) / svt;
    l->grid_z = VKLA_GRID_SEQS;
    return vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, l);
}

/* states_only: the chunk form's WY transform and state pass alone (o is not written; ht is),
 * which a backward pass split along T runs to find the state entering each piece. */
/* The args of the state pass alone: the chunk form (whose state pass it is), o unused (bound
 * to v so the plan's checks see a valid view; it is not written). */
static vkla_delta_rule_args states_args(const vkla_delta_rule_args *a)
{
    vkla_delta_rule_args sa = *a;
    sa.form = VKLA_FORM_CHUNK;
    sa.o = sa.v;
    return sa;
}

static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd, const vkla_delta_rule_args *a,
                          bool run_mode, bool states_only)
{
    vkla_delta_rule_args sa;
    if (states_only) {
        sa = states_args(a);
        a = &sa;
    }
    vkla_dr_plan p;
    vkla_result r = vkla__dr_plan(ctx, a, false, &p);
    if (r != VKLA_SUCCESS)
        return r;
    vkla_split *splits = NULL;
    uint32_t nsplit = 0;
    vkla_buffer *scr;
    uint64_t soff;
    r = vkla__resolve_scratch(ctx, OP, p.scratch_bytes, a->scratch, a->scratch_offset, run_mode,
                              16, &scr, &soff);
    if (r != VKLA_SUCCESS)
        goto done;

    vkla_bind binds[B_COUNT];
    vkla__dr_binds(&p, a, scr, soff, binds);
    if ((r = vkla__plan_splits(ctx, &p.seqs, p.HV, binds, B_COUNT, &splits, &nsplit)) != VKLA_SUCCESS)
        goto done;
    if ((r = vkla__dr_begin(ctx, cmd, &p, scr, soff)) != VKLA_SUCCESS)
        goto done;

    vkla_launch l;
    memset(&l, 0, sizeof(l));
    vkla__dr_push(&p, a, &l);
    l.nbind = B_COUNT;
    l.binds = binds;
    const vkla_dr_sizes z = vkla__dr_sizes(&p);
    char name[64];
    const char *ds = vkla__dr_dtype_suffix(p.dtype);
    if (p.form == VKLA_FORM_RECURRENT) {
        uint32_t ks = ctx->var.ks;
        uint32_t vt = 128 / ks ? 128 / ks : 1;
        if (vt > p.V)
            vt = p.V;
        uint32_t rows = (p.K + ks - 1) / ks;
        uint32_t spec[6] = {ks * vt, p.K, p.V, ks, vt, rows};
        snprintf(name, sizeof(name), "delta_rule/recurrent.%s%s", ds, ctx->var.subgroup ? ".sg" : "");
        if ((r = vkla__get_pipeline(ctx, name, spec, 6, B_COUNT, ctx->var.subgroup ? ks : 0,
                                    &l.pipe)) != VKLA_SUCCESS)
            goto done;
        l.grid_x = (p.V + vt - 1) / vt;
        l.grid_z = VKLA_GRID_SEQS;
        l.flops = z.tok * z.HV * (6 * z.K * z.V + 2 * z.V + ((p.flags & F_G) ? z.K * z.V : 0));
        l.bytes = z.qk + 2 * z.vo + z.gates +
                  4 * z.HV * p.N * z.K * z.V * (!!(p.flags & F_H0) + !!(p.flags & F_HT));
        r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l);
        goto done;
    }

    /* chunk form: WY transform per chunk, then the state pass, then the outputs */
    if ((r = vkla__dr_prep_scan(ctx, cmd, &p, splits, nsplit, &l)) != VKLA_SUCCESS ||
        states_only)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    if (ctx->var.flat) {
        /* straight-line: 64 threads per (block of rows query rows, 64 value columns); the query
         * rows of a block (K padded to 64, rows / 4 vec4s each) fit 32 KiB of shared memory */
        uint32_t rows = p.C < 32 ? p.C : 32;
        while (rows > 4 && (p.K + 63) / 64 * 64 * rows * 4 + 2 * p.C * 4 > SHARED_FLOATS * 4)
            rows /= 2;
        uint32_t spec3[7] = {64, p.K, p.V, p.C, rows, (p.flags & F_K4) ? 2 : 1, 1};
        snprintf(name, sizeof(name), "delta_rule/chunk_output_flat.%s", ds);
        if ((r = vkla__get_pipeline(ctx, name, spec3, 7, B_COUNT, 0, &l.pipe)) != VKLA_SUCCESS)
            goto done;
        l.grid_x = (p.C / rows) * ((4 * p.V4 + 63) / 64);
    } else {
        /* value tiles of 64, or 128 when V > 64: every tile forms the chunk's whole score block */
        uint32_t xu2 = p.V > 64 ? 2 : 1;
        uint32_t spec3[7] = {64, p.K, p.V, p.C, xu2, 1, 1};
        snprintf(name, sizeof(name), "delta_rule/chunk_output.%s", ds);
        if ((r = vkla__get_pipeline(ctx, name, spec3, 7, B_COUNT, 0, &l.pipe)) != VKLA_SUCCESS)
            goto done;
        l.grid_x = (p.V + 64 * xu2 - 1) / (64 * xu2);
    }
    l.grid_z = VKLA_GRID_CHUNKS;
    /* intra (Q K^T) causal and its product with V', (Q e^G) S */
    l.flops = z.HV * ((z.cs.s2 + z.cs.s1) * (z.K + z.V) + 2 * z.K * z.V * z.tok);
    l.bytes = z.qk + 4 * z.HV * z.tok * z.V + z.gates + z.states + z.vo;
    r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l);
done:
    free(splits);
    vkla__seqs_free(&p.seqs);
    return r;
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    vkla_dr_plan p;
    vkla_result r = vkla__dr_plan(ctx, (const vkla_delta_rule_args *)args, false, &p);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = p.scratch_bytes;
    vkla__seqs_free(&p.seqs);
    return VKLA_SUCCESS;
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return record(ctx, cmd, (const vkla_delta_rule_args *)args, run_mode, false);
}

/* Calls split along T (host/tsplit.c) */

static vkla_result states_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    vkla_delta_rule_args sa = states_args((const vkla_delta_rule_args *)args);
    return op_scratch(ctx, &sa, bytes);
}

static vkla_result states_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                                 bool run_mode)
{
    return record(ctx, cmd, (const vkla_delta_rule_args *)args, run_mode, true);
}

const vkla_op_impl vkla__dr_states_impl = {OP, states_scratch, states_record};

void vkla__dr_state_shape(const void *args, uint32_t i, uint32_t *ndim, uint64_t *shape)
{
    const vkla_delta_rule_args *a = (const vkla_delta_rule_args *)args;
    *ndim = i == 0 ? 3 : 0;
    shape[0] = a->v.shape[2];
    shape[1] = a->q.shape[3];
    shape[2] = a->v.shape[3];
}

#define FA(f) ((uint16_t)offsetof(vkla_delta_rule_args, f))
static const vkla_op_impl ONE = {OP, op_scratch, op_record};
static const vkla_tsplit_desc TSPLIT = {
    .one = &ONE,
    .args_size = sizeof(vkla_delta_rule_args),
    .tok = {FA(q), FA(k), FA(v), FA(o), FA(beta), FA(g)},
    .ntok = 6,
    .rows = {FA(h0), FA(ht)},
    .nrows = 2,
    .cu = FA(cu_seqlens), .num_seqs = FA(num_seqs), .chunk_size = FA(chunk_size),
    .s_in = {FA(h0)}, .s_out = {FA(ht)}, .nstate = 1,
    .scratch = FA(scratch), .scratch_offset = FA(scratch_offset),
    .fscratch = FA(scratch), .fscratch_offset = FA(scratch_offset),
    .state_shape = vkla__dr_state_shape,
};
#undef FA

VKLA_TSPLIT_IMPL(IMPL, OP, TSPLIT);

vkla_result vkla_delta_rule_record(vkla_context *ctx, VkCommandBuffer cmd,
                                   const vkla_delta_rule_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_delta_rule_run(vkla_context *ctx, const vkla_delta_rule_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_delta_rule_scratch_size(vkla_context *ctx, const vkla_delta_rule_args *args,
                                         uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_delta_rule_bench(vkla_context *ctx, const vkla_delta_rule_args *args,
                                  uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
