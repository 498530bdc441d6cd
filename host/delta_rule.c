/* Delta rule, DeltaNet and Gated DeltaNet (SPEC section 2): argument checks, scratch layout,
 * and the recurrent and chunk (WY / UT transform) forms. Kernels: shaders/delta_rule/. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP "delta_rule"

/* option flags: a push-constant word (shaders/delta_rule/common.glsl), not spec constants */
enum { F_G = 1, F_L2NORM = 2, F_H0 = 4, F_HT = 8, F_VARLEN = 16,
       F_Q4 = 32, F_K4 = 64, F_V4 = 128, F_O4 = 256 /* vec4 access to q, k, v, o */ };

/* binding slots, in shader order */
enum { B_Q, B_K, B_V, B_O, B_BETA, B_G, B_H0, B_HT, B_SEQ, B_CHUNK, B_WORK, B_STATE, B_COUNT };
/* push constant words */
enum { W_T = 0, W_SPLIT = 1, W_FLAGS = 4, W_GROUP = 5, W_HV = 6, W_SCALE = 7, W_NCHUNKS = 8,
       W_BASES = 9, W_STRIDES = 19, W_COUNT = 31 };
static const int base_words[B_COUNT] = {9, 10, 11, 12, 13, 14, 15, 16, -1, -1, 17, 18};

#define MAX_DIM 256u
#define FLOAT_DTYPES ((1u << VKLA_DTYPE_F32) | (1u << VKLA_DTYPE_F16) | (1u << VKLA_DTYPE_BF16))
#define F32_ONLY (1u << VKLA_DTYPE_F32)
#define SHARED_FLOATS 8192u /* 32 KiB: the smallest maxComputeSharedMemorySize we plan for */

typedef struct plan {
    vkla_form form;
    uint32_t B, T, H, HV, K, V, N, C;
    uint32_t flags;
    vkla_dtype dtype;
    float scale;
    vkla_seqs seqs;
    uint64_t off_seq, off_chunk, off_work, off_state, scratch_bytes;
    uint32_t K4, V4;   /* K and V in whole vec4s */
    uint64_t work_rec; /* vec4s per (value head, chunk) work record: C (2 K4 + V4 + 1) */
} plan;

/* Can the kernels read (write) t four elements at a time? Its last dimension and strides must
 * be multiples of 4 and every binding window must start 4-element aligned. */
static bool vec4_view(const vkla_context *ctx, const vkla_tensor *t)
{
    uint64_t es = vkla_dtype_size(t->dtype), st[VKLA_MAX_DIMS];
    uint64_t al = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    vkla__tensor_strides(t, st);
    return t->shape[3] % 4 == 0 && st[0] % 4 == 0 && st[1] % 4 == 0 && st[2] % 4 == 0 &&
           (t->buffer->base + t->offset) % (4 * es) == 0 && al % (4 * es) == 0;
}

static vkla_result make_plan(vkla_context *ctx, const vkla_delta_rule_args *a, plan *p)
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
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, OP ": v must be [B,T,HV,V] (got %u dims)", a->v.ndim);
    if (!a->beta.buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": tensor beta is missing (buffer NULL)");
    if (q->shape[0] > UINT32_MAX || q->shape[1] > UINT32_MAX || q->shape[2] > 65535 ||
        a->v.shape[2] > 65535)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, OP ": B, T, H or HV too large");
    p->B = (uint32_t)q->shape[0];
    p->T = (uint32_t)q->shape[1];
    p->H = (uint32_t)q->shape[2];
    p->HV = (uint32_t)a->v.shape[2];
    if (p->HV == 0 || p->HV % p->H)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH,
                          OP ": v has %u heads, not a multiple of q's %u", p->HV, p->H);
    uint64_t K = q->shape[3], V = a->v.shape[3];
    if (K > MAX_DIM || V > MAX_DIM)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          OP ": K = %llu, V = %llu; the maximum is %u", (unsigned long long)K,
                          (unsigned long long)V, MAX_DIM);
    p->K = (uint32_t)K;
    p->V = (uint32_t)V;
    p->dtype = q->dtype;
    uint32_t dmask = 1u << q->dtype;
    uint64_t sk[4] = {p->B, p->T, p->H, K}, sv[4] = {p->B, p->T, p->HV, V};
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
        goto fail;
    p->N = p->seqs.n;
    if (a->cu_seqlens)
        p->flags |= F_VARLEN;

    uint64_t sb[3] = {p->B, p->T, p->HV}, sh[4] = {p->N, p->HV, K, V};
    uint32_t beta_flag = 0;
    if ((r = vkla__check_f32_opt(ctx, OP, "beta", &a->beta, 3, sb,
                                 1, &beta_flag)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "g", &a->g, 3, sb,
                                 F_G, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "h0", &a->h0, 4, sh,
                                 F_H0, &p->flags)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "ht", &a->ht, 4, sh,
                                 F_HT, &p->flags)) != VKLA_SUCCESS)
        goto fail;
    if (a->l2norm)
        p->flags |= F_L2NORM;
    p->flags |= (vec4_view(ctx, &a->q) ? F_Q4 : 0) | (vec4_view(ctx, &a->k) ? F_K4 : 0) |
                (vec4_view(ctx, &a->v) ? F_V4 : 0) | (vec4_view(ctx, &a->o) ? F_O4 : 0);
    p->scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)p->K);
    if (!isfinite(p->scale)) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": scale must be finite");
        goto fail;
    }
    p->C = a->chunk_size ? a->chunk_size : 64;
    if (p->C != 16 && p->C != 32 && p->C != 64) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": chunk_size %u is not 16, 32 or 64",
                       a->chunk_size);
        goto fail;
    }

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
    }
    p->scratch_bytes = off;
    return VKLA_SUCCESS;
fail:
    vkla__seqs_free(&p->seqs);
    return r;
}

static void fill_push(const plan *p, const vkla_delta_rule_args *a, vkla_launch *l)
{
    memset(l->push, 0, sizeof(l->push));
    l->push[W_T] = p->T;
    l->push[W_FLAGS] = p->flags;
    l->push[W_GROUP] = p->HV / p->H;
    l->push[W_HV] = p->HV;
    memcpy(&l->push[W_SCALE], &p->scale, 4);
    l->push[W_NCHUNKS] = (uint32_t)p->seqs.nchunks;
    const vkla_tensor *ts[4] = {&a->q, &a->k, &a->v, &a->o};
    for (int i = 0; i < 4; i++) {
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

static const char *dtype_suffix(vkla_dtype d)
{
    return d == VKLA_DTYPE_F16 ? "f16" : d == VKLA_DTYPE_BF16 ? "bf16" : "f32";
}

/* Tiles of the chunk scan (64 threads as rg row groups x 64/rg column groups): each thread
 * keeps 4 rs4 state rows and cn vec4 columns in registers, the workgroup a tile of 4 (64/rg) cn
 * value columns. The state tile and V' (C x tile) also sit in shared memory, which must fit
 * 32 KiB. Wider tiles and 8 x 8 thread grids read W, KD and the state fewer times; narrower
 * tiles give the sequential pass more workgroups. */
static void scan_tiles(const plan *p, uint32_t *cn, uint32_t *rs4, uint32_t *rg)
{
    uint32_t g = p->K > 128 ? 16 : 8, cg = 64 / g, r = (p->K + 4 * g - 1) / (4 * g), c = 2;
    while (c > 1 && ((4 * g * r + p->C) * cg * c * 16 > SHARED_FLOATS * 4 || 2 * cg * c >= p->V ||
                     (uint64_t)p->N * p->HV * ((p->V + 4 * cg * c - 1) / (4 * cg * c)) < 4))
        c /= 2;
    *cn = c;
    *rs4 = r;
    *rg = g;
}

static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd, const vkla_delta_rule_args *a,
                          bool run_mode)
{
    plan p;
    vkla_result r = make_plan(ctx, a, &p);
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
    memset(binds, 0, sizeof(binds));
    binds[B_Q] = vkla__bind_tensor(&a->q, VKLA_ROWS_TOKENS);
    binds[B_K] = vkla__bind_tensor(&a->k, VKLA_ROWS_TOKENS);
    binds[B_Q].head_div = binds[B_K].head_div = p.HV / p.H; /* splits run over value heads */
    binds[B_V] = vkla__bind_tensor(&a->v, VKLA_ROWS_TOKENS);
    binds[B_O] = vkla__bind_tensor(&a->o, VKLA_ROWS_TOKENS);
    binds[B_BETA] = vkla__bind_tensor(&a->beta, VKLA_ROWS_TOKENS);
    binds[B_G] = vkla__bind_tensor(&a->g, VKLA_ROWS_TOKENS);
    binds[B_H0] = vkla__bind_tensor(&a->h0, VKLA_ROWS_SEQS);
    binds[B_HT] = vkla__bind_tensor(&a->ht, VKLA_ROWS_SEQS);
    if (p.flags & F_VARLEN) {
        binds[B_SEQ] = vkla__bind_region(scr, soff + p.off_seq, 16, VKLA_ROWS_WHOLE, 0, 0, 0,
                                         (uint64_t)p.N * 16);
        if (p.form == VKLA_FORM_CHUNK)
            binds[B_CHUNK] = vkla__bind_region(scr, soff + p.off_chunk, 8, VKLA_ROWS_WHOLE, 0, 0,
                                               0, p.seqs.nchunks * 8);
    }
    if (p.form == VKLA_FORM_CHUNK) {
        /* vec4 elements: the kernels index these as vec4 arrays */
        uint64_t nc = p.seqs.nchunks, kv = (uint64_t)p.K * p.V4;
        binds[B_WORK] = vkla__bind_region(scr, soff + p.off_work, 16, VKLA_ROWS_CHUNKS, p.work_rec,
                                          nc * p.work_rec, p.work_rec, 0);
        binds[B_STATE] = vkla__bind_region(scr, soff + p.off_state, 16, VKLA_ROWS_CHUNKS, kv,
                                           nc * kv, kv, 0);
    }
    if ((r = vkla__plan_splits(ctx, &p.seqs, p.HV, binds, B_COUNT, &splits, &nsplit)) != VKLA_SUCCESS)
        goto done;

    /* order this call after earlier vkla work in the command buffer (shared scratch, and the
     * placeholder buffer bound to absent tensors) */
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                      VK_ACCESS_TRANSFER_WRITE_BIT);
    if (p.flags & F_VARLEN) {
        /* sequence table (start, length, first chunk) and chunk table (sequence, start) */
        uint32_t *seqt = calloc((size_t)p.N * 4, sizeof(uint32_t));
        uint32_t *cht = p.form == VKLA_FORM_CHUNK ? calloc((size_t)p.seqs.nchunks * 2 + 2, sizeof(uint32_t)) : NULL;
        if (!seqt || (p.form == VKLA_FORM_CHUNK && !cht)) {
            free(seqt);
            free(cht);
            r = vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
            goto done;
        }
        for (uint32_t i = 0; i < p.N; i++) {
            seqt[4 * i + 0] = (uint32_t)a->cu_seqlens[i];
            seqt[4 * i + 1] = vkla__seq_len(&p.seqs, i);
            seqt[4 * i + 2] = p.seqs.chunk_off ? p.seqs.chunk_off[i] : 0;
            if (cht)
                for (uint32_t c = p.seqs.chunk_off[i]; c < p.seqs.chunk_off[i + 1]; c++) {
                    cht[2 * c + 0] = i;
                    cht[2 * c + 1] = (c - p.seqs.chunk_off[i]) * p.C;
                }
        }
        vkla__update_buffer(ctx, cmd, scr, soff + p.off_seq, seqt, (uint64_t)p.N * 16);
        if (cht && p.seqs.nchunks)
            vkla__update_buffer(ctx, cmd, scr, soff + p.off_chunk, cht, p.seqs.nchunks * 8);
        free(seqt);
        free(cht);
        vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    }

    vkla_launch l;
    memset(&l, 0, sizeof(l));
    fill_push(&p, a, &l);
    l.nbind = B_COUNT;
    l.binds = binds;
    char name[64];
    const char *ds = dtype_suffix(p.dtype);
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
        r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l);
        goto done;
    }

    /* chunk form: WY transform per chunk, then the state pass, then the outputs */
    uint32_t cn, rs4, rg;
    scan_tiles(&p, &cn, &rs4, &rg);
    uint32_t svt = 4 * (64 / rg) * cn, ovt = 64; /* value tiles of the scan and the output */
    uint32_t spec1[7] = {64, p.K, p.V, p.C, 1, 1, 1};
    uint32_t spec2[7] = {64, p.K, p.V, p.C, cn, rs4, rg};
    uint32_t spec3[7] = {64, p.K, p.V, p.C, 1, 1, 1};
    vkla_pipeline *p1, *p2, *p3;
    snprintf(name, sizeof(name), "delta_rule/chunk_prep.%s", ds);
    if ((r = vkla__get_pipeline(ctx, name, spec1, 7, B_COUNT, 0, &p1)) != VKLA_SUCCESS)
        goto done;
    snprintf(name, sizeof(name), "delta_rule/chunk_scan.%s", ds);
    if ((r = vkla__get_pipeline(ctx, name, spec2, 7, B_COUNT, 0, &p2)) != VKLA_SUCCESS)
        goto done;
    snprintf(name, sizeof(name), "delta_rule/chunk_output.%s", ds);
    if ((r = vkla__get_pipeline(ctx, name, spec3, 7, B_COUNT, 0, &p3)) != VKLA_SUCCESS)
        goto done;

    l.pipe = p1;
    l.grid_x = 1;
    l.grid_z = VKLA_GRID_CHUNKS;
    if ((r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    l.pipe = p2;
    l.grid_x = (p.V + svt - 1) / svt;
    l.grid_z = VKLA_GRID_SEQS;
    if ((r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    l.pipe = p3;
    l.grid_x = (p.V + ovt - 1) / ovt;
    l.grid_z = VKLA_GRID_CHUNKS;
    r = vkla__launch_splits(ctx, cmd, &p.seqs, splits, nsplit, &l);
done:
    free(splits);
    vkla__seqs_free(&p.seqs);
    return r;
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    plan p;
    vkla_result r = make_plan(ctx, (const vkla_delta_rule_args *)args, &p);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = p.scratch_bytes;
    vkla__seqs_free(&p.seqs);
    return VKLA_SUCCESS;
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return record(ctx, cmd, (const vkla_delta_rule_args *)args, run_mode);
}

static const vkla_op_impl IMPL = {OP, op_scratch, op_record};

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
