/* LION bidirectional linear attention (SPEC section 3): argument checks, scratch layout, and the
 * attn, rnn and chunk forms. Kernels: shaders/lion/ (the math is in their headers and in
 * docs/lion.md). */
#include "lion_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP "lion"

static const int base_words[B_COUNT] = {4, 5, 6, 7, 20, 21, -1, -1, 22, 23};

#define MAX_DIM LION_MAX_DIM
#define TILE LION_TILE
#define FLOAT_DTYPES ((1u << VKLA_DTYPE_F32) | (1u << VKLA_DTYPE_F16) | (1u << VKLA_DTYPE_BF16))

/* The q, k, v or o rows a heavy kernel sees: the caller's tensor (f32, 4-aligned rows) or a
 * packed f32 copy in scratch ([B,T,H,Xp], Xp = the row length rounded up to 4). */
typedef struct view {
    bool packed;
    uint32_t xp;           /* packed row length */
    uint64_t off;          /* packed: offset in the scratch */
} view;

typedef struct plan {
    vkla_lion_dims d;
    uint32_t Kp, Va, xs;   /* K and V rounded up to 4; scratch row length (see the kernels) */
    uint32_t nkt, nvt;     /* 64-wide tiles over K and V */
    view vq, vk, vv, vo;
    uint64_t off_seq, off_chunk, off_st, off_z, st_elems, z_elems, scratch_bytes;
    bool short_path;       /* host/lion_short.c instead of the form's kernels */
} plan;

/* Rows of a [B,T,H,X] tensor can be read as 4-element vectors: X, the strides and the start
 * (in elements of the buffer) are multiples of 4. */
bool vkla__lion_vec4_rows(const vkla_tensor *t)
{
    uint64_t st[VKLA_MAX_DIMS];
    vkla__tensor_strides(t, st);
    uint64_t es = vkla_dtype_size(t->dtype);
    return t->shape[3] % 4 == 0 && st[0] % 4 == 0 && st[1] % 4 == 0 && st[2] % 4 == 0 &&
           (t->buffer->base + t->offset) % (4 * es) == 0;
}
#define vec4_rows vkla__lion_vec4_rows

vkla_result vkla__lion_check(vkla_context *ctx, const char *op, const vkla_lion_args *a,
                             bool need_o, vkla_lion_dims *p)
{
    memset(p, 0, sizeof(*p));
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!a)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: args is NULL", op);
    p->form = a->form == VKLA_FORM_DEFAULT ? VKLA_FORM_CHUNK : a->form;
    if (p->form != VKLA_FORM_CHUNK && p->form != VKLA_FORM_ATTN && p->form != VKLA_FORM_RNN)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "%s: form %d is not chunk, attn or rnn", op, (int)a->form);
    const vkla_tensor *q = &a->q;
    if (!q->buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: tensor q is missing (buffer NULL)",
                          op);
    if (q->ndim != 4)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: q must be [B,T,H,K] (got %u dims)",
                          op, q->ndim);
    vkla_result r = vkla__check_tensor(ctx, op, "q", q, 4, q->shape, FLOAT_DTYPES);
    if (r != VKLA_SUCCESS)
        return r;
    if (!a->v.buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: tensor v is missing (buffer NULL)",
                          op);
    if (a->v.ndim != 4)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: v must be [B,T,H,V] (got %u dims)",
                          op, a->v.ndim);
    if (q->shape[0] > UINT32_MAX || q->shape[1] > UINT32_MAX || q->shape[2] > 65535)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "%s: B, T or H too large", op);
    p->B = (uint32_t)q->shape[0];
    p->T = (uint32_t)q->shape[1];
    p->H = (uint32_t)q->shape[2];
    uint64_t K = q->shape[3], V = a->v.shape[3];
    if (K > MAX_DIM || V > MAX_DIM)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "%s: K = %llu, V = %llu; the maximum is %u", op, (unsigned long long)K,
                          (unsigned long long)V, MAX_DIM);
    p->K = (uint32_t)K;
    p->V = (uint32_t)V;
    p->dtype = q->dtype;
    uint64_t sk[4] = {p->B, p->T, p->H, K}, sv[4] = {p->B, p->T, p->H, V};
    if ((r = vkla__check_tensor(ctx, op, "k", &a->k, 4, sk, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if ((r = vkla__check_tensor(ctx, op, "v", &a->v, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    if (need_o &&
        (r = vkla__check_tensor(ctx, op, "o", &a->o, 4, sv, FLOAT_DTYPES)) != VKLA_SUCCESS)
        return r;
    vkla_dtype odt = need_o ? a->o.dtype : q->dtype;
    if (a->k.dtype != q->dtype || a->v.dtype != q->dtype || odt != q->dtype)
        return vkla__fail(ctx, VKLA_ERROR_DTYPE_MISMATCH,
                          "%s: q, k, v and o must share one dtype (q %s, k %s, v %s, o %s)", op,
                          vkla_dtype_name(q->dtype), vkla_dtype_name(a->k.dtype),
                          vkla_dtype_name(a->v.dtype), vkla_dtype_name(odt));
    if (p->dtype != VKLA_DTYPE_F32 && !ctx->caps.storage16)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "%s: %s tensors need storageBuffer16BitAccess, which this device/context "
                          "lacks", op, vkla_dtype_name(p->dtype));

    p->C = a->chunk_size ? a->chunk_size : 64;
    if (p->C != 16 && p->C != 32 && p->C != 64)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "%s: chunk_size %u is not 16, 32 or 64",
                          op, a->chunk_size);
    r = vkla__seqs_init(ctx, &p->seqs, p->B, p->T, a->cu_seqlens, a->num_seqs, TILE);
    if (r != VKLA_SUCCESS)
        goto fail;
    p->N = p->seqs.n;
    if (a->cu_seqlens)
        p->flags |= F_VARLEN;

    uint64_t sg[3] = {p->B, p->T, p->H}, sgam[1] = {p->H};
    if ((r = vkla__check_f32_opt(ctx, op, "g", &a->g, 3, sg,
                                 F_G, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, op, "g_gamma", &a->g_gamma, 1, sgam,
                                 F_GAMMA, &p->flags)) != VKLA_SUCCESS)
        goto fail;
    if (a->normalize)
        p->flags |= F_NORM;
    p->scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)p->K);
    p->eps = a->eps != 0.0f ? a->eps : 1e-6f;
    if (!isfinite(p->scale) || !isfinite(p->eps) || p->eps < 0) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                       "%s: scale and eps must be finite (eps >= 0)", op);
        goto fail;
    }
    return VKLA_SUCCESS;
fail:
    vkla__seqs_free(&p->seqs);
    return r;
}

uint64_t vkla__lion_layout_tables(vkla_context *ctx, const vkla_lion_dims *d, uint64_t *al,
                                  uint64_t *off_seq, uint64_t *off_chunk)
{
    *al = vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    uint64_t off = 0;
    *off_seq = *off_chunk = 0;
    if (d->flags & F_VARLEN) {
        *off_seq = off;
        off = vkla__align_up(off + (uint64_t)d->N * 16, *al);
        *off_chunk = off;
        off = vkla__align_up(off + d->seqs.nchunks * 8 + 8, *al);
    }
    return off;
}

static vkla_result make_plan(vkla_context *ctx, const vkla_lion_args *a, plan *p)
{
    memset(p, 0, sizeof(*p));
    vkla_result r = vkla__lion_check(ctx, OP, a, true, &p->d);
    if (r != VKLA_SUCCESS)
        return r;
    const vkla_lion_dims *d = &p->d;
    p->Kp = (d->K + 3) & ~3u;
    p->Va = (d->V + 3) & ~3u;
    p->nkt = (d->K + TILE - 1) / TILE;
    p->nvt = (d->V + TILE - 1) / TILE;

    /* scratch layout (offsets from a 16-byte aligned start inside the caller's scratch) */
    uint64_t al, off = vkla__lion_layout_tables(ctx, d, &al, &p->off_seq, &p->off_chunk);
    /* packed f32 copies of the rows the heavy kernels cannot read directly; the rnn form
     * writes o from its combine step, which takes any dtype and layout */
    uint64_t rows = (uint64_t)d->B * d->T * d->H;
    view *views[4] = {&p->vq, &p->vk, &p->vv, &p->vo};
    const vkla_tensor *ts[4] = {&a->q, &a->k, &a->v, &a->o};
    for (int i = 0; i < 4; i++) {
        views[i]->xp = i < 2 ? p->Kp : p->Va;
        views[i]->packed = !(ts[i]->dtype == VKLA_DTYPE_F32 && vec4_rows(ts[i]));
        if (i == 3 && d->form == VKLA_FORM_RNN)
            views[i]->packed = false;
        if (views[i]->packed) {
            views[i]->off = off;
            off = vkla__align_up(off + rows * views[i]->xp * 4, al);
        }
    }
    if (d->form == VKLA_FORM_CHUNK) {
        /* the states entering each chunk, both directions: [H, slots, 2, Kp, Va] (+ z) with
         * 64 / C chunk slots per 64-token tile */
        uint64_t slots = d->seqs.nchunks * (TILE / d->C);
        p->xs = p->Va;
        p->st_elems = (uint64_t)d->H * slots * 2 * p->Kp * p->Va;
        p->z_elems = (d->flags & F_NORM) ? (uint64_t)d->H * slots * 2 * p->Kp : 0;
    } else if (d->form == VKLA_FORM_RNN) {
        /* partial outputs per token: [B, T, H, 2 * K tiles, xs], normalizer in column Va */
        p->xs = p->Va + ((d->flags & F_NORM) ? 4 : 0);
        p->st_elems = rows * 2 * p->nkt * p->xs;
    }
    if (p->st_elems) {
        p->off_st = off;
        off = vkla__align_up(off + p->st_elems * 4, al);
    }
    if (p->z_elems) {
        p->off_z = off;
        off = vkla__align_up(off + p->z_elems * 4, al);
    }
    if (off)
        off += 16; /* slack to align the start */
    p->scratch_bytes = off;
    if ((p->short_path = vkla__lion_short_use(ctx, d)))
        p->scratch_bytes = vkla__lion_short_scratch(ctx, d);
    return VKLA_SUCCESS;
}

/* Register block of a lane (RB x RB): 16 on CPU implementations, where a memory access costs
 * an order of magnitude more than a multiply-add and large blocks amortize it; 8 elsewhere
 * (64 lanes per 64 x 64 tile). VKLA_LION_BLOCK=8|16 overrides. */
uint32_t vkla__lion_lane_block(vkla_context *ctx)
{
    uint32_t rb = ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 16 : 8;
    const char *e = vkla__getenv("VKLA_LION_BLOCK");
    if (e && (!strcmp(e, "8") || !strcmp(e, "16")))
        rb = (uint32_t)atoi(e);
    return rb;
}

void vkla__lion_push(const vkla_lion_dims *d, uint32_t xs, vkla_launch *l)
{
    memset(l->push, 0, sizeof(l->push));
    l->push[W_T] = d->T;
    memcpy(&l->push[W_SCALE], &d->scale, 4);
    memcpy(&l->push[W_EPS], &d->eps, 4);
    l->push[W_NTILES] = (uint32_t)d->seqs.nchunks;
    l->push[W_K] = d->K;
    l->push[W_V] = d->V;
    l->push[W_H] = d->H;
    l->push[W_CFG] = d->flags | (d->C << 8);
    l->push[W_XS] = xs;
    l->push_words = W_COUNT;
    for (int i = 0; i < VKLA_MAX_BINDINGS; i++)
        l->base_word[i] = i < B_COUNT ? base_words[i] : -1;
    l->split_word = W_SPLIT;
}

void vkla__lion_set_strides(vkla_launch *l, int i, const uint64_t *st)
{
    for (int d = 0; d < 3; d++)
        l->push[W_STRIDES + i * 3 + d] = (uint32_t)st[d];
}

static const char *dtype_suffix(vkla_dtype d)
{
    return d == VKLA_DTYPE_F16 ? "f16" : d == VKLA_DTYPE_BF16 ? "bf16" : "f32";
}

vkla_result vkla__lion_pipeline(vkla_context *ctx, const char *kernel, int dtype, uint32_t lanes,
                                uint32_t rb, uint32_t vec, uint32_t nbind, vkla_pipeline **out)
{
    char name[64];
    if (dtype >= 0)
        snprintf(name, sizeof(name), "lion/%s.%s", kernel, dtype_suffix((vkla_dtype)dtype));
    else
        snprintf(name, sizeof(name), "lion/%s", kernel);
    uint32_t spec[4] = {lanes, rb, rb, vec};
    return vkla__get_pipeline(ctx, name, spec, 4, nbind, 0, out);
}

vkla_bind vkla__lion_packed_bind(const vkla_lion_dims *d, vkla_buffer *scr, uint64_t off,
                                 uint32_t xp, uint64_t *st)
{
    vkla_bind b = vkla__bind_region(scr, off, 4, VKLA_ROWS_TOKENS,
                                    (uint64_t)d->T * d->H * xp, xp, xp, 0);
    b.st = (uint64_t)d->H * xp;
    st[0] = b.sb;
    st[1] = b.st;
    st[2] = b.sh;
    return b;
}

vkla_result vkla__lion_tables(vkla_context *ctx, VkCommandBuffer cmd, const vkla_lion_dims *d,
                              vkla_buffer *scr, uint64_t off_seq, uint64_t off_chunk)
{
    vkla__order_after_earlier(ctx, cmd);
    return vkla__upload_seq_tables(ctx, cmd, &d->seqs, scr, off_seq, off_chunk);
}

/* One call of the op; bnd (chunk form only, may be NULL): the call is a piece of a longer one
 * (host/lion_tsplit.c), its state scans take and give the states at its two ends. */
static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd, const vkla_lion_args *a,
                          bool run_mode, const vkla_lion_bnd *bnd)
{
    plan p;
    vkla_result r = make_plan(ctx, a, &p);
    if (r != VKLA_SUCCESS)
        return r;
    vkla_split *splits = NULL;
    uint32_t nsplit = 0;
    vkla_buffer *scr;
    uint64_t soff;
    if (p.short_path) {
        const vkla_tensor *t[7] = {&a->q, &a->k, &a->v, NULL, &a->o, NULL, NULL};
        r = vkla__lion_short_record(ctx, cmd, OP, &p.d, t, a->scratch, a->scratch_offset,
                                    run_mode);
        goto done;
    }
    r = vkla__resolve_scratch(ctx, OP, p.scratch_bytes, a->scratch, a->scratch_offset, run_mode,
                              0, &scr, &soff);
    if (r != VKLA_SUCCESS)
        goto done;
    /* score tiles of 64 x 64 floats plus a few rows of decays live in shared memory */
    if (ctx->caps.props.limits.maxComputeSharedMemorySize < 20 * 1024) {
        r = vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                       OP ": needs 20 KiB of shared memory per workgroup, the device has %u bytes",
                       ctx->caps.props.limits.maxComputeSharedMemorySize);
        goto done;
    }
    /* the kernels read the scratch as 16-byte vectors: start its regions 16-byte aligned */
    const uint64_t base = p.scratch_bytes ? vkla__align_up(scr->base + soff, 16) - scr->base : 0;

    /* every region any dispatch binds, for the split plan */
    enum { X_QP = B_COUNT, X_KP, X_VP, X_OP, X_COUNT };
    vkla_bind all[X_COUNT];
    memset(all, 0, sizeof(all));
    uint64_t st_user[4][VKLA_MAX_DIMS], st_eff[4][3];
    const vkla_tensor *ts[4] = {&a->q, &a->k, &a->v, &a->o};
    const view *vs[4] = {&p.vq, &p.vk, &p.vv, &p.vo};
    for (int i = 0; i < 4; i++) {
        all[B_Q + i] = vkla__bind_tensor(ts[i], VKLA_ROWS_TOKENS);
        vkla__tensor_strides(ts[i], st_user[i]);
        memcpy(st_eff[i], st_user[i], sizeof(st_eff[i]));
        if (vs[i]->packed)
            all[X_QP + i] = vkla__lion_packed_bind(&p.d, scr, base + vs[i]->off, vs[i]->xp,
                                                   st_eff[i]);
    }
    all[B_G] = vkla__bind_tensor(&a->g, VKLA_ROWS_TOKENS);
    all[B_GAMMA] = vkla__bind_tensor(&a->g_gamma, VKLA_ROWS_NONE);
    vkla__bind_seq_tables(&p.d.seqs, scr, base + p.off_seq, base + p.off_chunk, &all[B_SEQ],
                          &all[B_CHUNK]);
    uint64_t nt = p.d.seqs.nchunks;
    if (p.d.form == VKLA_FORM_CHUNK) {
        uint64_t per = (uint64_t)(TILE / p.d.C) * 2 * p.Kp * p.Va;  /* per 64-token tile */
        all[B_ST] = vkla__bind_region(scr, base + p.off_st, 4, VKLA_ROWS_CHUNKS, per, nt * per,
                                      per, 0);
        if (p.z_elems) {
            uint64_t zper = (uint64_t)(TILE / p.d.C) * 2 * p.Kp;
            all[B_Z] = vkla__bind_region(scr, base + p.off_z, 4, VKLA_ROWS_CHUNKS, zper,
                                         nt * zper, zper, 0);
        }
    } else if (p.d.form == VKLA_FORM_RNN) {
        uint64_t X = 2ull * p.nkt * p.xs;
        all[B_ST] = vkla__bind_region(scr, base + p.off_st, 4, VKLA_ROWS_TOKENS,
                                      (uint64_t)p.d.T * p.d.H * X, X, X, 0);
        all[B_ST].st = (uint64_t)p.d.H * X;
    }
    if ((r = vkla__plan_splits(ctx, &p.d.seqs, p.d.H, all, X_COUNT, &splits, &nsplit)) !=
        VKLA_SUCCESS)
        goto done;

    if (p.scratch_bytes &&
        (r = vkla__lion_tables(ctx, cmd, &p.d, scr, base + p.off_seq, base + p.off_chunk)) !=
            VKLA_SUCCESS)
        goto done;

    const uint32_t rb = vkla__lion_lane_block(ctx);
    const uint32_t tile_lanes = (TILE / rb) * (TILE / rb);
    /* the per-launch models (docs/bench.md): V' = V + the normalizer column */
    const vkla_chunk_sums cs = vkla__chunk_sums(&p.d.seqs, p.d.C);
    const double H = p.d.H, K = p.d.K, V = p.d.V, nz = (p.d.flags & F_NORM) ? 1 : 0, VP = V + nz;
    const double tok = cs.s1, io = tok * H * (double)vkla_dtype_size(p.d.dtype);
    const double gb = 4 * tok * H * ((p.d.flags & F_G) ? 1 : 0), stb = 4 * H * cs.n * 2 * K * VP;
    vkla_launch l;
    vkla_bind binds[B_COUNT + 1]; /* + chunk_output's B_TERMS (not written by the forward) */

    /* packed copies of q, k, v */
    bool packed_any = false;
    for (int i = 0; i < 3; i++) {
        if (!vs[i]->packed)
            continue;
        vkla_pipeline *pp;
        if ((r = vkla__lion_pipeline(ctx, "pack", (int)ts[i]->dtype, 64, rb, vec4_rows(ts[i]),
                                     B_COUNT, &pp)) != VKLA_SUCCESS)
            goto done;
        memset(binds, 0, sizeof(binds));
        memcpy(binds, all, sizeof(binds));
        binds[B_Q] = all[B_Q + i];
        binds[B_ST] = all[X_QP + i];
        memset(&l, 0, sizeof(l));
        vkla__lion_push(&p.d, p.xs, &l);
        vkla__lion_set_strides(&l, 0, st_user[i]);
        l.push[W_K] = i < 2 ? p.d.K : p.d.V;
        l.push[W_XS] = vs[i]->xp;
        l.nbind = B_COUNT;
        l.binds = binds;
        l.pipe = pp;
        l.grid_x = 1;
        l.grid_z = VKLA_GRID_CHUNKS;
        l.bytes = (io + 4 * tok * H) * (i < 2 ? K : V);
        if ((r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
        packed_any = true;
    }
    if (packed_any)
        vkla__compute_barrier(ctx, cmd);

    /* the heavy kernels see f32 rows: the caller's or the packed ones */
    memcpy(binds, all, sizeof(binds));
    memset(&l, 0, sizeof(l));
    vkla__lion_push(&p.d, p.xs, &l);
    for (int i = 0; i < 4; i++) {
        if (vs[i]->packed)
            binds[B_Q + i] = all[X_QP + i];
        vkla__lion_set_strides(&l, i, st_eff[i]);
    }
    l.nbind = B_COUNT;
    l.binds = binds;
    vkla_pipeline *p1 = NULL, *p2 = NULL;
    if (p.d.form == VKLA_FORM_ATTN) {
        if ((r = vkla__lion_pipeline(ctx, "attn", -1, tile_lanes, rb, 1, B_COUNT, &p1)) !=
            VKLA_SUCCESS)
            goto done;
        l.pipe = p1;
        l.grid_x = p.nvt;
        l.grid_z = VKLA_GRID_CHUNKS;
        double L2 = 0;
        for (uint32_t i = 0; i < p.d.seqs.n; i++)
            L2 += (double)vkla__seq_len(&p.d.seqs, i) * vkla__seq_len(&p.d.seqs, i);
        l.flops = H * (L2 * (2 * K + 2 * V + nz) + nz * tok * V);
        l.bytes = io * 2 * (K + V) + gb;
        if ((r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
    } else if (p.d.form == VKLA_FORM_RNN) {
        if ((r = vkla__lion_pipeline(ctx, "rnn_scan", -1, tile_lanes, rb, 1, B_COUNT, &p1)) !=
                VKLA_SUCCESS ||
            (r = vkla__lion_pipeline(ctx, "rnn_combine", (int)p.d.dtype, 64, rb,
                                     vec4_rows(&a->o), B_COUNT, &p2)) != VKLA_SUCCESS)
            goto done;
        l.pipe = p1;
        l.grid_x = p.nkt * p.nvt * 2;
        l.grid_z = VKLA_GRID_SEQS;
        /* both scans: updates and outputs, 2KV' each, and the decays */
        l.flops = tok * H * (8 * K * VP + ((p.d.flags & (F_G | F_GAMMA)) ? 2 * K * VP : 0));
        l.bytes = io * (2 * K + V) + gb + 4 * tok * H * 2 * p.nkt * p.xs;
        if ((r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
        l.flops = tok * H * (2 * K + 2 * VP + nz * V); /* the diagonal (q.k) v, the division */
        l.bytes = io * (2 * K + 2 * V) + 4 * tok * H * 2 * p.nkt * p.xs;
        /* the combine writes the caller's o in its own dtype and layout */
        binds[B_O] = all[B_O];
        vkla__lion_set_strides(&l, 3, st_user[3]);
        l.pipe = p2;
        l.grid_x = p.nvt;
        l.grid_z = VKLA_GRID_CHUNKS;
        r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l);
        goto done;
    } else {
        /* chunk form: the two state scans, then the outputs of all chunks */
        if ((r = vkla__lion_pipeline(ctx, "chunk_state", -1, tile_lanes, rb, 1, B_COUNT, &p1)) !=
                VKLA_SUCCESS ||
            (r = vkla__lion_pipeline(ctx, "chunk_output", -1, tile_lanes, rb, 1, B_COUNT + 1,
                                     &p2)) != VKLA_SUCCESS)
            goto done;
        l.pipe = p1;
        l.grid_x = p.nkt * p.nvt * 2;
        l.grid_z = VKLA_GRID_SEQS;
        l.flops = H * 4 * K * VP * (tok + cs.n); /* both directions: K^T V', the state pass */
        l.bytes = io * (K + V) + gb + stb;
        const vkla_bind keep_o = binds[B_O];
        if (bnd) { /* the boundary slots in o's place (chunk_state never writes o) */
            l.push[W_CFG] |= LION_F_BND | (bnd->nsh << 17);
            binds[B_O] = vkla__bind_region(bnd->buf, bnd->offset, 4, VKLA_ROWS_WHOLE, 0, 0, 0,
                                           2 * vkla__lion_slot_bytes((uint64_t)p.d.seqs.n *
                                                                         p.d.H, p.d.K, p.d.V));
        }
        r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l);
        l.push[W_CFG] &= 0xFFFFu;
        binds[B_O] = keep_o;
        if (r != VKLA_SUCCESS || (bnd && bnd->states_only))
            goto done;
        vkla__compute_barrier(ctx, cmd);
        /* the full in-chunk block (Q K^T) V', both directions' Q S, the division */
        l.flops = H * (2 * cs.s2 * (K + VP) + 4 * K * VP * tok + nz * V * tok);
        l.bytes = io * 2 * (K + V) + gb + stb;
        binds[B_TERMS] = binds[B_O]; /* never written: o rather than the placeholder buffer */
        l.nbind = B_COUNT + 1;
        l.pipe = p2;
        l.grid_x = p.nvt;
        l.grid_z = VKLA_GRID_CHUNKS;
        if ((r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
    }
    if (p.vo.packed) {
        /* o from its packed f32 copy */
        vkla_pipeline *pu;
        if ((r = vkla__lion_pipeline(ctx, "unpack", (int)p.d.dtype, 64, rb, vec4_rows(&a->o),
                                     B_COUNT, &pu)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
        memcpy(binds, all, sizeof(binds));
        binds[B_ST] = all[X_OP];
        memset(&l, 0, sizeof(l));
        vkla__lion_push(&p.d, p.xs, &l);
        vkla__lion_set_strides(&l, 3, st_user[3]);
        l.push[W_XS] = p.vo.xp;
        l.nbind = B_COUNT;
        l.binds = binds;
        l.pipe = pu;
        l.grid_x = 1;
        l.grid_z = VKLA_GRID_CHUNKS;
        l.bytes = (io + 4 * tok * H) * V;
        r = vkla__launch_splits(ctx, cmd, &p.d.seqs, splits, nsplit, &l);
    }
done:
    free(splits);
    vkla__seqs_free(&p.d.seqs);
    return r;
}

vkla_result vkla__lion_scratch_one(vkla_context *ctx, const vkla_lion_args *a, uint64_t *bytes,
                                   bool *short_path)
{
    plan p;
    vkla_result r = make_plan(ctx, a, &p);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = p.scratch_bytes;
    if (short_path)
        *short_path = p.short_path;
    vkla__seqs_free(&p.d.seqs);
    return VKLA_SUCCESS;
}

vkla_result vkla__lion_record_one(vkla_context *ctx, VkCommandBuffer cmd, const vkla_lion_args *a,
                                  bool run_mode, const vkla_lion_bnd *bnd)
{
    return record(ctx, cmd, a, run_mode, bnd);
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    return vkla__lion_tsplit_scratch(ctx, (const vkla_lion_args *)args, bytes);
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return vkla__lion_tsplit_record(ctx, cmd, (const vkla_lion_args *)args, run_mode);
}

static const vkla_op_impl IMPL = {OP, op_scratch, op_record};

vkla_result vkla_lion_record(vkla_context *ctx, VkCommandBuffer cmd,
                             const vkla_lion_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_lion_run(vkla_context *ctx, const vkla_lion_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_lion_scratch_size(vkla_context *ctx, const vkla_lion_args *args,
                                   uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_lion_bench(vkla_context *ctx, const vkla_lion_args *args,
                            uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
