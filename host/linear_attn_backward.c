/* Backward pass of linear_attn (SPEC section 4): argument checks, scratch layout, and the chunkwise
 * gradient kernels. Kernels: shaders/linear_attn/bwd_*.comp, after the forward's chunk_state and
 * chunk_scan, which recompute the state entering every chunk (and the final states).
 *
 * Steps (each parallel over chunks and heads unless said otherwise):
 *   forward chunk_state + chunk_scan   S_in of every chunk, the chunk decays, the final states
 *   bwd_intra    A (masked decayed scores) and P (do . v) of every chunk
 *   bwd_norm     normalize only: 1/d_t, do'_t[V], and P for the normalised output
 *   bwd_dstate   each chunk's contribution scale (Q e^G)^T do' to the state gradient
 *   bwd_dscan    reverse pass over chunks (parallel over heads and state elements): D, dh0
 *   bwd_dqk      dq, dk, dgk and per-tile sums of the log-decay gradient
 *   bwd_dv       dv
 *   bwd_dg       dg and dg_gamma from the per-tile sums (one workgroup per head) */
#include "linear_attn.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP "linear_attn_backward"

/* gradients requested (spec constant BFLAGS) */
enum { BF_DQ = 1, BF_DK = 2, BF_DV = 4, BF_DG = 8, BF_DGAMMA = 16, BF_DGK = 32, BF_DH0 = 64,
       BF_DHT = 128 };
#define BF_GATES (BF_DG | BF_DGAMMA | BF_DGK)

/* binding slots of the bwd_* kernels, in shader order */
enum { BB_Q, BB_K, BB_V, BB_DO, BB_G, BB_GAMMA, BB_GK, BB_DHT, BB_SEQ, BB_CHUNK, BB_SCR, BB_DQ,
       BB_DK, BB_DV, BB_OUTA, BB_OUTB, BB_COUNT };
/* push constant words */
enum { P_T = 0, P_SPLIT = 1, P_SCALE = 18, P_EPS = 19, P_NCHUNKS = 20, P_REGIONS = 21,
       P_NSEQS = 30, P_COUNT = 31 };
static const int bwd_base_words[BB_COUNT] = {4, 5, 6, 7, 8, 9, 10, 11, -1, -1, 12, 13, 14, 15,
                                             16, 17};

/* regions of the f32 scratch block, in this order (see shaders/linear_attn/bwd_common.glsl) */
enum { R_STATE, R_DECAY, R_FIN, R_FINZ, R_DST, R_AMAT, R_PMAT, R_NRM, R_DGP, R_COUNT };
#define PRM_WORDS 64u   /* the strides block at the start of the f32 scratch */
#define KQ 32u          /* key channels per bwd_dqk workgroup */

typedef struct bplan {
    vkla_la_plan p;              /* the forward's plan (chunk form), scratch offsets moved */
    vkla_linear_attn_args fa;    /* the forward's args as the recomputation uses them */
    uint32_t bflags;
    uint64_t off_f;              /* bytes: start of the f32 block */
    uint64_t region[R_COUNT];    /* elements from the start of the f32 block */
    uint64_t f_elems;
    uint64_t scratch_bytes;
} bplan;

typedef struct named_tensor {
    const char *name;
    const vkla_tensor *t;
} named_tensor;

static vkla_result check_grad(vkla_context *ctx, const char *name, const vkla_tensor *t,
                              uint32_t ndim, const uint64_t *shape, uint32_t dmask, bool input,
                              const char *input_name, uint32_t bit, uint32_t *bflags,
                              bool contiguous)
{
    if (!t->buffer)
        return VKLA_SUCCESS;
    if (!input)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          OP ": %s is given but the forward has no %s", name, input_name);
    vkla_result r = vkla__check_tensor(ctx, OP, name, t, ndim, shape, dmask);
    if (r != VKLA_SUCCESS)
        return r;
    if (contiguous && !vkla__tensor_contiguous(t))
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": %s must be contiguous", name);
    *bflags |= bit;
    return VKLA_SUCCESS;
}

static vkla_result make_bplan(vkla_context *ctx, const vkla_linear_attn_backward_args *a, bplan *bp)
{
    memset(bp, 0, sizeof(*bp));
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!a)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": args is NULL");
    const vkla_linear_attn_args *f = &a->fwd;
    if (f->form != VKLA_FORM_DEFAULT && f->form != VKLA_FORM_CHUNK &&
        f->form != VKLA_FORM_RECURRENT)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          OP ": fwd.form %d is not chunk or recurrent", (int)f->form);
    /* the forward's checks, on its inputs only (o, ht, zt and its scratch are not used) */
    bp->fa = *f;
    bp->fa.form = VKLA_FORM_CHUNK;
    bp->fa.o = f->v;
    memset(&bp->fa.ht, 0, sizeof(bp->fa.ht));
    memset(&bp->fa.zt, 0, sizeof(bp->fa.zt));
    bp->fa.scratch = NULL;
    bp->fa.scratch_offset = 0;
    vkla_la_plan *p = &bp->p;
    vkla_result r = vkla__la_make_plan(ctx, &bp->fa, p);
    if (r != VKLA_SUCCESS)
        return r;

    uint32_t dmask = 1u << p->dtype;
    uint64_t sq[4] = {p->B, p->T, p->H, p->K}, sv[4] = {p->B, p->T, p->H, p->V};
    uint64_t sg[3] = {p->B, p->T, p->H}, sgam[1] = {p->H}, sh[4] = {p->N, p->H, p->K, p->V};
    if (!a->dout.buffer) {
        r = vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": dout is missing (buffer NULL)");
        goto fail;
    }
    if ((r = vkla__check_tensor(ctx, OP, "dout", &a->dout, 4, sv, dmask)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "dht", &a->dht, 4, sh, BF_DHT, &bp->bflags)) != VKLA_SUCCESS ||
        (r = check_grad(ctx, "dq", &a->dq, 4, sq, dmask, true, "q", BF_DQ, &bp->bflags, false)) ||
        (r = check_grad(ctx, "dk", &a->dk, 4, sq, dmask, true, "k", BF_DK, &bp->bflags, false)) ||
        (r = check_grad(ctx, "dv", &a->dv, 4, sv, dmask, true, "v", BF_DV, &bp->bflags, false)) ||
        (r = check_grad(ctx, "dg", &a->dg, 3, sg, F32_ONLY, p->flags & F_G, "g", BF_DG,
                        &bp->bflags, true)) ||
        (r = check_grad(ctx, "dg_gamma", &a->dg_gamma, 1, sgam, F32_ONLY, p->flags & F_GAMMA,
                        "g_gamma", BF_DGAMMA, &bp->bflags, true)) ||
        (r = check_grad(ctx, "dgk", &a->dgk, 4, sq, F32_ONLY, p->flags & F_GK, "gk", BF_DGK,
                        &bp->bflags, true)) ||
        (r = check_grad(ctx, "dh0", &a->dh0, 4, sh, F32_ONLY, p->flags & F_H0, "h0", BF_DH0,
                        &bp->bflags, true)))
        goto fail;

    /* gradients must not overlap each other, dout, dht or any input */
    const named_tensor outs[] = {{"dq", &a->dq}, {"dk", &a->dk}, {"dv", &a->dv}, {"dg", &a->dg},
                                 {"dg_gamma", &a->dg_gamma}, {"dgk", &a->dgk}, {"dh0", &a->dh0}};
    const named_tensor ins[] = {{"q", &f->q}, {"k", &f->k}, {"v", &f->v}, {"g", &f->g},
                                {"g_gamma", &f->g_gamma}, {"gk", &f->gk}, {"h0", &f->h0},
                                {"z0", &f->z0}, {"dout", &a->dout}, {"dht", &a->dht}};
    const size_t nouts = sizeof(outs) / sizeof(outs[0]), nins = sizeof(ins) / sizeof(ins[0]);
    for (size_t i = 0; i < nouts; i++) {
        if (!outs[i].t->buffer)
            continue;
        for (size_t j = i + 1; j < nouts; j++)
            if (vkla__views_overlap(outs[i].t, outs[j].t)) {
                r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": %s and %s overlap",
                               outs[i].name, outs[j].name);
                goto fail;
            }
        for (size_t j = 0; j < nins; j++)
            if (vkla__views_overlap(outs[i].t, ins[j].t)) {
                r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                               OP ": gradient %s overlaps input %s", outs[i].name, ins[j].name);
                goto fail;
            }
    }

    /* the last token of every chunk needs the state leaving it: for the last chunk of a
     * sequence that is the final state, which the state pass writes into scratch */
    if (bp->bflags & BF_GATES)
        p->flags |= F_HT | ((p->flags & F_NORM) ? F_ZT : 0);

    /* scratch: the forward's tables, then one f32 block of regions */
    uint64_t al = vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    uint64_t off = 0, H = p->H, nc = p->seqs.nchunks, C = p->C;
    if (p->flags & F_VARLEN) {
        p->off_seq = off;
        off = vkla__align_up(off + (uint64_t)p->N * 16, al);
        p->off_chunk = off;
        off = vkla__align_up(off + nc * 8, al);
    }
    bp->off_f = off;
    uint64_t nkt = (p->K + KQ - 1) / KQ;
    uint64_t sizes[R_COUNT] = {
        [R_STATE] = H * nc * p->K * p->VP,
        [R_DECAY] = H * nc * p->KD,
        [R_FIN] = (uint64_t)p->N * H * p->K * p->V,
        [R_FINZ] = (uint64_t)p->N * H * p->K,
        [R_DST] = H * nc * p->K * p->VP,
        [R_AMAT] = H * nc * C * C,
        [R_PMAT] = H * nc * C * C,
        [R_NRM] = (p->flags & F_NORM) ? H * nc * C * 2 : 0,
        [R_DGP] = H * nc * nkt * C,
    };
    uint64_t e = PRM_WORDS;
    for (int i = 0; i < R_COUNT; i++) {
        bp->region[i] = e;
        e += vkla__align_up(sizes[i], 4);
    }
    bp->f_elems = e;
    p->off_state = bp->off_f + bp->region[R_STATE] * 4;
    p->off_decay = bp->off_f + bp->region[R_DECAY] * 4;
    bp->scratch_bytes = bp->off_f + e * 4;
    p->scratch_bytes = bp->scratch_bytes;
    return VKLA_SUCCESS;
fail:
    vkla__seqs_free(&p->seqs);
    return r;
}

static vkla_result get_pipe(vkla_context *ctx, const bplan *bp, const char *kernel, bool typed,
                            uint32_t threads, vkla_pipeline **out)
{
    const vkla_la_plan *p = &bp->p;
    uint32_t spec[8] = {threads, p->K, p->V, p->H, p->flags, p->C, bp->bflags, 1};
    char name[64];
    snprintf(name, sizeof(name), "linear_attn/%s.%s", kernel,
             typed ? vkla__la_dtype_suffix(p->dtype) : "f32");
    return vkla__get_pipeline(ctx, name, spec, 8, BB_COUNT, 0, out);
}

static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd,
                          const vkla_linear_attn_backward_args *a, bool run_mode)
{
    bplan bp;
    vkla_result r = make_bplan(ctx, a, &bp);
    if (r != VKLA_SUCCESS)
        return r;
    const vkla_la_plan *p = &bp.p;
    vkla_split *fsplits = NULL, *splits = NULL;
    uint32_t nfsplit = 0, nsplit = 0;
    vkla_buffer *scr;
    uint64_t soff;
    r = vkla__resolve_scratch(ctx, OP, bp.scratch_bytes, a->scratch, a->scratch_offset, run_mode,
                              0, &scr, &soff);
    if (r != VKLA_SUCCESS)
        goto done;
    const uint64_t fbase = soff + bp.off_f;
    /* the scratch block and dg are bound whole; longer calls run in pieces (host/tsplit.c) */
    uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    if (bp.f_elems * 4 > range || bp.f_elems > UINT32_MAX ||
        ((bp.bflags & BF_DG) && (uint64_t)p->B * p->T * p->H * 4 > range)) {
        r = vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                       OP ": the scratch block (%llu bytes) or dg exceeds maxStorageBufferRange "
                       "(%llu)", (unsigned long long)(bp.f_elems * 4), (unsigned long long)range);
        goto done;
    }

    /* the forward's state recomputation; the final states go to scratch */
    if (p->flags & F_HT) {
        uint64_t sh[4] = {p->N, p->H, p->K, p->V};
        bp.fa.ht = vkla_tensor_make(scr, fbase + bp.region[R_FIN] * 4, VKLA_DTYPE_F32, 4, sh);
        if (p->flags & F_ZT)
            bp.fa.zt = vkla_tensor_make(scr, fbase + bp.region[R_FINZ] * 4, VKLA_DTYPE_F32, 3, sh);
    }
    vkla_bind fbinds[B_COUNT];
    vkla__la_binds(p, &bp.fa, scr, soff, fbinds);
    if ((r = vkla__plan_splits(ctx, &p->seqs, p->H, fbinds, B_COUNT, &fsplits, &nfsplit)) != VKLA_SUCCESS)
        goto done;

    vkla_bind binds[BB_COUNT];
    memset(binds, 0, sizeof(binds));
    const vkla_linear_attn_args *f = &a->fwd;
    binds[BB_Q] = vkla__bind_tensor(&f->q, VKLA_ROWS_TOKENS);
    binds[BB_K] = vkla__bind_tensor(&f->k, VKLA_ROWS_TOKENS);
    binds[BB_V] = vkla__bind_tensor(&f->v, VKLA_ROWS_TOKENS);
    binds[BB_DO] = vkla__bind_tensor(&a->dout, VKLA_ROWS_TOKENS);
    binds[BB_G] = vkla__bind_tensor(&f->g, VKLA_ROWS_TOKENS);
    binds[BB_GAMMA] = vkla__bind_tensor(&f->g_gamma, VKLA_ROWS_NONE);
    binds[BB_GK] = vkla__bind_tensor(&f->gk, VKLA_ROWS_TOKENS);
    binds[BB_DHT] = vkla__bind_tensor(&a->dht, VKLA_ROWS_SEQS);
    binds[BB_SEQ] = fbinds[B_SEQ];
    binds[BB_CHUNK] = fbinds[B_CHUNK];
    binds[BB_SCR] = vkla__bind_region(scr, fbase, 4, VKLA_ROWS_WHOLE, 0, 0, 0, bp.f_elems * 4);
    binds[BB_DQ] = vkla__bind_tensor(&a->dq, VKLA_ROWS_TOKENS);
    binds[BB_DK] = vkla__bind_tensor(&a->dk, VKLA_ROWS_TOKENS);
    binds[BB_DV] = vkla__bind_tensor(&a->dv, VKLA_ROWS_TOKENS);
    /* slot a carries dgk (bwd_dqk) or dh0 (bwd_dscan): plan the splits with both windows */
    binds[BB_OUTA] = vkla__bind_tensor(&a->dgk, VKLA_ROWS_TOKENS);
    binds[BB_OUTB] = vkla__bind_tensor(&a->dh0, VKLA_ROWS_SEQS);
    if ((r = vkla__plan_splits(ctx, &p->seqs, p->H, binds, BB_COUNT, &splits, &nsplit)) != VKLA_SUCCESS)
        goto done;
    binds[BB_OUTB] = (vkla_bind){0};

    vkla__order_after_earlier(ctx, cmd);
    /* strides of q k v dout dq dk dv (the push constants have no room for them) */
    uint32_t prm[PRM_WORDS];
    memset(prm, 0, sizeof(prm));
    const vkla_tensor *st_of[7] = {&f->q, &f->k, &f->v, &a->dout, &a->dq, &a->dk, &a->dv};
    for (int i = 0; i < 7; i++) {
        uint64_t st[VKLA_MAX_DIMS];
        if (!st_of[i]->buffer)
            continue;
        vkla__tensor_strides(st_of[i], st);
        for (int d = 0; d < 3; d++)
            prm[3 * i + d] = (uint32_t)st[d];
    }
    vkla__update_buffer(ctx, cmd, scr, fbase, prm, sizeof(prm));
    if ((r = vkla__la_upload_tables(ctx, cmd, p, scr, soff)) != VKLA_SUCCESS)
        goto done;
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);

    if ((r = vkla__la_record_states(ctx, cmd, p, &bp.fa, fbinds, fsplits, nfsplit)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);

    vkla_launch l;
    memset(&l, 0, sizeof(l));
    l.push[P_T] = p->T;
    memcpy(&l.push[P_SCALE], &p->scale, 4);
    memcpy(&l.push[P_EPS], &p->eps, 4);
    l.push[P_NCHUNKS] = (uint32_t)p->seqs.nchunks;
    for (int i = 0; i < R_COUNT; i++)
        l.push[P_REGIONS + i] = (uint32_t)bp.region[i];
    l.push[P_NSEQS] = p->N;
    l.push_words = P_COUNT;
    for (int i = 0; i < BB_COUNT; i++)
        l.base_word[i] = bwd_base_words[i];
    l.split_word = P_SPLIT;
    l.nbind = BB_COUNT;
    l.binds = binds;
    const uint32_t C = p->C, nkt = (p->K + KQ - 1) / KQ;
    const bool want_qk = bp.bflags & (BF_DQ | BF_DK | BF_GATES);
    /* the per-launch models: z.tri the causal in-chunk blocks, z.kv a K x V' product per token */
    const vkla_la_sizes z = vkla__la_sizes(p);
    const double tri = z.H * (z.cs.s2 + z.cs.s1), kv = z.H * 2 * z.K * z.VP * z.tok;
    const double io = z.es * z.tok * z.H;

    /* in-chunk scores, then (normalize) the gradient of the normalised output */
    l.grid_z = VKLA_GRID_CHUNKS;
    l.grid_x = 1;
    l.flops = tri * (z.VP + z.K); /* dO V'^T and Q K^T */
    l.bytes = io * 2 * (z.K + z.V) + z.gates;
    if ((r = get_pipe(ctx, &bp, "bwd_intra", true, (C / 8) * (C / 8), &l.pipe)) != VKLA_SUCCESS ||
        (r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    if (p->flags & F_NORM) {
        l.flops = tri * (z.K + z.VP) + kv; /* the forward's output pass */
        l.bytes = io * 2 * (z.K + z.V) + z.gates + z.states;
        if ((r = get_pipe(ctx, &bp, "bwd_norm", true, 64, &l.pipe)) != VKLA_SUCCESS ||
            (r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
    }
    /* state gradients: per-chunk contributions, then the reverse pass over chunks */
    l.grid_x = ((p->K + 63) / 64) * ((p->VP + 63) / 64);
    l.flops = kv; /* (Q e^G)^T dO */
    l.bytes = io * (z.K + z.V) + z.gates + z.states;
    if ((r = get_pipe(ctx, &bp, "bwd_dstate", true, 128, &l.pipe)) != VKLA_SUCCESS ||
        (r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    binds[BB_OUTA] = vkla__bind_tensor(&a->dh0, VKLA_ROWS_SEQS);
    l.grid_x = (p->K * p->VP + 255) / 256;
    l.grid_z = VKLA_GRID_SEQS;
    l.flops = z.H * 2 * z.K * z.VP * z.cs.n; /* the reverse state pass */
    l.bytes = 2 * z.states + 4 * z.H * p->N * z.K * z.VP * (!!a->dht.buffer + !!a->dh0.buffer);
    if ((r = get_pipe(ctx, &bp, "bwd_dscan", false, 256, &l.pipe)) != VKLA_SUCCESS ||
        (r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
        goto done;
    vkla__compute_barrier(ctx, cmd);
    /* dq, dk (and the decay gradients), dv */
    binds[BB_OUTA] = vkla__bind_tensor(&a->dgk, VKLA_ROWS_TOKENS);
    l.grid_z = VKLA_GRID_CHUNKS;
    if (want_qk) {
        l.grid_x = nkt;
        l.flops = tri * 2 * z.K + 2 * kv; /* the scores' uses in dq, dk; dO S^T, V dS^T */
        l.bytes = io * 2 * (z.K + z.V) + z.gates + 2 * z.states + io * 2 * z.K;
        if ((r = get_pipe(ctx, &bp, "bwd_dqk", true, C, &l.pipe)) != VKLA_SUCCESS ||
            (r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
    }
    if (bp.bflags & BF_DV) {
        /* independent of bwd_dqk, but both bind the whole scratch writable */
        if (want_qk)
            vkla__compute_barrier(ctx, cmd);
        l.grid_x = (p->V + 63) / 64;
        l.flops = tri * z.VP + kv; /* the scores' use in dv; K dS */
        l.bytes = io * (2 * z.K + 2 * z.V) + z.gates + z.states;
        if ((r = get_pipe(ctx, &bp, "bwd_dv", true, C, &l.pipe)) != VKLA_SUCCESS ||
            (r = vkla__launch_splits(ctx, cmd, &p->seqs, splits, nsplit, &l)) != VKLA_SUCCESS)
            goto done;
    }
    /* dg, dg_gamma: one workgroup per head over every chunk of the call */
    if (bp.bflags & (BF_DG | BF_DGAMMA)) {
        vkla__compute_barrier(ctx, cmd);
        vkla_bind rb[BB_COUNT];
        memset(rb, 0, sizeof(rb));
        rb[BB_SEQ] = binds[BB_SEQ];
        rb[BB_CHUNK] = binds[BB_CHUNK];
        rb[BB_SCR] = binds[BB_SCR];
        if (a->dg.buffer)
            rb[BB_OUTA] = vkla__bind_region(a->dg.buffer, a->dg.offset, 4, VKLA_ROWS_WHOLE, 0, 0,
                                            0, (uint64_t)p->B * p->T * p->H * 4);
        if (a->dg_gamma.buffer)
            rb[BB_OUTB] = vkla__bind_region(a->dg_gamma.buffer, a->dg_gamma.offset, 4,
                                            VKLA_ROWS_WHOLE, 0, 0, 0, (uint64_t)p->H * 4);
        l.binds = rb;
        l.grid_x = 1;
        l.grid_z = VKLA_GRID_SEQS;
        l.flops = 0;
        l.bytes = z.gates * 2;
        const vkla_split all = {0, 1, 0, p->H};
        if ((r = get_pipe(ctx, &bp, "bwd_dg", false, 64, &l.pipe)) != VKLA_SUCCESS)
            goto done;
        r = vkla__launch(ctx, cmd, &p->seqs, &all, &l);
    }
done:
    free(fsplits);
    free(splits);
    vkla__seqs_free(&bp.p.seqs);
    return r;
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    bplan bp;
    vkla_result r = make_bplan(ctx, (const vkla_linear_attn_backward_args *)args, &bp);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = bp.scratch_bytes;
    vkla__seqs_free(&bp.p.seqs);
    return VKLA_SUCCESS;
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return record(ctx, cmd, (const vkla_linear_attn_backward_args *)args, run_mode);
}

/* Calls split along T (host/tsplit.c) */

static vkla_result can_split(vkla_context *ctx, const void *args)
{
    if (((const vkla_linear_attn_backward_args *)args)->fwd.normalize)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          OP ": with normalize, a call longer than one piece (a sequence beyond "
                          "maxStorageBufferRange or the scratch bound) is not supported");
    return VKLA_SUCCESS;
}

#define FB(f) ((uint16_t)offsetof(vkla_linear_attn_backward_args, f))
#define FA(f) ((uint16_t)offsetof(vkla_linear_attn_args, f))
static const vkla_op_impl ONE = {OP, op_scratch, op_record};
static const vkla_tsplit_desc TSPLIT = {
    .one = &ONE,
    .args_size = sizeof(vkla_linear_attn_backward_args),
    .tok = {FB(fwd.q), FB(fwd.k), FB(fwd.v), FB(fwd.g), FB(fwd.gk), FB(dout), FB(dq), FB(dk),
            FB(dv), FB(dg), FB(dgk)},
    .ntok = 11,
    .whole_tok = 1u << 9, /* dg */
    .rows = {FB(fwd.h0), FB(fwd.z0), FB(dht), FB(dh0)},
    .nrows = 4,
    .fwd = FB(fwd),
    .cu = FA(cu_seqlens), .num_seqs = FA(num_seqs), .chunk_size = FA(chunk_size),
    .s_in = {FA(h0), FA(z0)}, .s_out = {FA(ht), FA(zt)}, .nstate = 1,
    .scratch = FB(scratch), .scratch_offset = FB(scratch_offset),
    .fscratch = FA(scratch), .fscratch_offset = FA(scratch_offset),
    .backward = true, .dht = FB(dht), .dh0 = FB(dh0), .sum = FB(dg_gamma),
    .states = &vkla__la_states_impl,
    .state_shape = vkla__la_state_shape,
    .can_split = can_split,
};
#undef FA
#undef FB

VKLA_TSPLIT_IMPL(IMPL, OP, TSPLIT);

vkla_result vkla_linear_attn_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                             const vkla_linear_attn_backward_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_linear_attn_backward_run(vkla_context *ctx,
                                          const vkla_linear_attn_backward_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_linear_attn_backward_scratch_size(vkla_context *ctx,
                                                   const vkla_linear_attn_backward_args *args,
                                                   uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_linear_attn_backward_bench(vkla_context *ctx,
                                            const vkla_linear_attn_backward_args *args,
                                            uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
