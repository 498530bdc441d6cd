/* Backward pass of delta_rule (SPEC section 4): argument checks, scratch layout, and the chunkwise
 * gradient kernels. Kernels: shaders/delta_rule/bwd_*.comp.
 *
 * Steps: (1) the forward's chunk_prep (W, KD, U and T = (I + A)^-1 per chunk), (2) the forward's
 * chunk_scan (the state entering each chunk, V'), (3) bwd_local: the in-chunk parts of dV' and
 * of the state gradient, (4) bwd_scan: the reverse pass over chunks (the gradient of the state
 * leaving each chunk, dV', dh0), (5) bwd_grad: every token gradient per chunk and value head,
 * (6) bwd_store: dq and dk summed over the value heads of a q/k head, and all gradients stored.
 * Scratch: the forward chunk form's, T per chunk, and a backward record per (value head, chunk)
 * (shaders/delta_rule/bwd_layout.glsl). */
#include "delta_rule.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP "delta_rule_backward"

/* bwd_store.comp: bindings, push words and output flags */
enum { S_DQ, S_DK, S_DV, S_BWD, S_DB, S_DG, S_UNUSED6, S_UNUSED7, S_SEQ, S_CHUNK, S_COUNT };
enum { SW_BASES = 9, SW_STRIDES = 15, SW_COUNT = 24 };
enum { O_DQ = 1, O_DK = 2, O_DV = 4, O_DB = 8, O_VARLEN = 16, O_DG = 32 };

typedef struct bplan {
    vkla_dr_plan fp;       /* the forward chunk form's plan (its scratch comes first) */
    uint64_t rec;          /* vec4s per backward record */
    uint64_t off_bwd, off_carry, scratch_bytes;
    uint32_t groups;       /* workgroups per chunk of the per-chunk kernels (grid x) */
    uint32_t nper, passes; /* bwd_scan: chunks per sequence and pass, passes */
    uint32_t out;          /* O_* */
} bplan;

/* vec4s per (value head, chunk) backward record: the sizes in bwd_layout.glsl */
static uint64_t record_vec4s(const vkla_dr_plan *p)
{
    uint64_t C = p->C;
    return C * (5 * (uint64_t)p->K4 + 3 * (uint64_t)p->V4 + 1 + C) + (uint64_t)p->K * p->V4 + 16;
}

typedef struct named {
    const char *name;
    const vkla_tensor *t;
} named;

static vkla_result make_plan(vkla_context *ctx, const vkla_delta_rule_backward_args *a, bplan *bp)
{
    memset(bp, 0, sizeof(*bp));
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!a)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": args is NULL");
    vkla_dr_plan *p = &bp->fp;
    vkla_result r = vkla__dr_plan(ctx, &a->fwd, true, p);
    if (r != VKLA_SUCCESS)
        return r;
    const vkla_delta_rule_args *f = &a->fwd;
    uint64_t sq[4] = {p->B, p->T, p->H, p->K}, sv[4] = {p->B, p->T, p->HV, p->V};
    uint64_t sb[3] = {p->B, p->T, p->HV}, sh[4] = {p->N, p->HV, p->K, p->V};
    uint32_t dm = 1u << p->dtype, unused = 0;
    if (!a->dout.buffer) {
        r = vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, OP ": tensor dout is missing (buffer NULL)");
        goto fail;
    }
    if ((r = vkla__check_tensor(ctx, OP, "dout", &a->dout, 4, sv, dm)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "dht", &a->dht, 4, sh, 1, &unused)) != VKLA_SUCCESS)
        goto fail;
    /* a gradient needs its input */
    const struct {
        const char *name, *input;
        const vkla_tensor *grad, *in;
    } need[3] = {{"dg", "g", &a->dg, &f->g}, {"dh0", "h0", &a->dh0, &f->h0},
                 {"dbeta", "beta", &a->dbeta, &f->beta}};
    for (int i = 0; i < 3; i++)
        if (need[i].grad->buffer && !need[i].in->buffer) {
            r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                           OP ": %s is given but the forward has no %s", need[i].name,
                           need[i].input);
            goto fail;
        }
    if ((a->dq.buffer && (r = vkla__check_tensor(ctx, OP, "dq", &a->dq, 4, sq, dm)) != VKLA_SUCCESS) ||
        (a->dk.buffer && (r = vkla__check_tensor(ctx, OP, "dk", &a->dk, 4, sq, dm)) != VKLA_SUCCESS) ||
        (a->dv.buffer && (r = vkla__check_tensor(ctx, OP, "dv", &a->dv, 4, sv, dm)) != VKLA_SUCCESS) ||
        (r = vkla__check_f32_opt(ctx, OP, "dbeta", &a->dbeta, 3, sb, O_DB, &bp->out)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "dg", &a->dg, 3, sb, O_DG, &bp->out)) != VKLA_SUCCESS ||
        (r = vkla__check_f32_opt(ctx, OP, "dh0", &a->dh0, 4, sh, 1, &unused)) != VKLA_SUCCESS)
        goto fail;
    bp->out |= (a->dq.buffer ? O_DQ : 0) | (a->dk.buffer ? O_DK : 0) | (a->dv.buffer ? O_DV : 0) |
               (p->flags & F_VARLEN ? O_VARLEN : 0);
    /* gradients must not overlap each other, dout, dht or an input */
    const named grads[6] = {{"dq", &a->dq}, {"dk", &a->dk}, {"dv", &a->dv},
                            {"dbeta", &a->dbeta}, {"dg", &a->dg}, {"dh0", &a->dh0}};
    const named others[8] = {{"dout", &a->dout}, {"dht", &a->dht}, {"q", &f->q}, {"k", &f->k},
                             {"v", &f->v}, {"beta", &f->beta}, {"g", &f->g}, {"h0", &f->h0}};
    for (int i = 0; i < 6; i++) {
        for (int j = 0; j < 6 + 8; j++) {
            const named *o = j < 6 ? &grads[j] : &others[j - 6];
            if ((j >= 6 || j > i) && vkla__views_overlap(grads[i].t, o->t)) {
                r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, OP ": %s overlaps %s",
                               grads[i].name, o->name);
                goto fail;
            }
        }
    }
    uint64_t al = vkla__align_up(ctx->caps.props.limits.minStorageBufferOffsetAlignment, 256);
    bp->rec = record_vec4s(p);
    bp->off_bwd = p->scratch_bytes;
    bp->off_carry =
        vkla__align_up(bp->off_bwd + (uint64_t)p->HV * p->seqs.nchunks * bp->rec * 16, al);
    bp->scratch_bytes =
        vkla__align_up(bp->off_carry + (uint64_t)p->N * p->HV * p->K * p->V * 4, al);
    /* CPU drivers may end a shader invocation after 65535 loop iterations (all loops
     * together): the per-chunk kernels spread the elements of each step (at most `most`,
     * each a loop of at most 64 iterations) over enough workgroups of 64 threads to keep an
     * invocation near 4096 iterations per loop, and bwd_scan walks a sequence in passes of
     * nper chunks. With one workgroup (most <= 4096), bwd_grad's four steps share one
     * invocation: a few thousand iterations in all. */
    uint64_t most = (uint64_t)p->C * (4 * p->K4 > p->C ? 4 * p->K4 : p->C);
    if ((uint64_t)p->K * p->V4 > most)
        most = (uint64_t)p->K * p->V4;
    if ((uint64_t)p->C * p->V4 > most)
        most = (uint64_t)p->C * p->V4;
    bp->groups = (uint32_t)((most + 4095) / 4096);
    bp->groups = bp->groups > 64 ? 64 : bp->groups < 1 ? 1 : bp->groups;
    uint32_t per_chunk = 2 * p->K4 * (p->C / 4) + p->K4 + p->C / 4;
    bp->nper = 12000 / per_chunk ? 12000 / per_chunk : 1;
    uint32_t maxn = 0;
    for (uint32_t i = 0; i < p->N; i++)
        if (p->seqs.chunk_off[i + 1] - p->seqs.chunk_off[i] > maxn)
            maxn = p->seqs.chunk_off[i + 1] - p->seqs.chunk_off[i];
    bp->passes = (maxn + bp->nper - 1) / bp->nper;
    if (bp->passes == 0)
        bp->passes = 1; /* empty sequences still pass dht on to dh0 */
    if (bp->passes > 65535) {
        r = vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, OP ": a sequence has too many chunks");
        goto fail;
    }
    return VKLA_SUCCESS;
fail:
    vkla__seqs_free(&p->seqs);
    return r;
}

static vkla_result pipeline(vkla_context *ctx, const vkla_dr_plan *p, const char *kernel,
                            uint32_t threads, uint32_t p1, uint32_t p2, uint32_t nbind,
                            vkla_pipeline **out)
{
    char name[64];
    uint32_t spec[7] = {threads, p->K, p->V, p->C, p1, p2, 1};
    snprintf(name, sizeof(name), "delta_rule/%s.%s", kernel, vkla__dr_dtype_suffix(p->dtype));
    return vkla__get_pipeline(ctx, name, spec, nbind == B_COUNT ? 7 : 4, nbind, 0, out);
}

/* The launch of bwd_store over the q/k heads: each workgroup also writes the rows of the
 * group's value heads, so those bindings span group heads per q/k head. */
static vkla_result store_launch(vkla_context *ctx, const bplan *bp,
                                const vkla_delta_rule_backward_args *a, const vkla_bind *fb,
                                vkla_buffer *scr, uint64_t soff, vkla_bind *sbinds,
                                vkla_launch *l)
{
    const vkla_dr_plan *p = &bp->fp;
    uint64_t g = p->HV / p->H, nc = p->seqs.nchunks;
    memset(sbinds, 0, sizeof(*sbinds) * S_COUNT);
    sbinds[S_DQ] = vkla__bind_tensor(&a->dq, VKLA_ROWS_TOKENS);
    sbinds[S_DK] = vkla__bind_tensor(&a->dk, VKLA_ROWS_TOKENS);
    const vkla_tensor *pv[3] = {&a->dv, &a->dbeta, &a->dg};
    for (int i = 0; i < 3; i++) {
        vkla_bind b = vkla__bind_tensor(pv[i], VKLA_ROWS_TOKENS);
        b.inner += (g - 1) * b.sh;
        b.sh *= g;
        sbinds[i == 0 ? S_DV : i == 1 ? S_DB : S_DG] = b;
    }
    sbinds[S_BWD] = vkla__bind_region(scr, soff + bp->off_bwd, 16, VKLA_ROWS_CHUNKS, bp->rec,
                                      g * nc * bp->rec, (g - 1) * nc * bp->rec + bp->rec, 0);
    sbinds[S_SEQ] = fb[B_SEQ];
    sbinds[S_CHUNK] = fb[B_CHUNK];
    vkla_result r = pipeline(ctx, p, "bwd_store", 64, 1, 1, S_COUNT, &l->pipe);
    if (r != VKLA_SUCCESS)
        return r;
    memset(l->push, 0, sizeof(l->push));
    l->push[W_T] = p->T;
    l->push[W_FLAGS] = bp->out;
    l->push[W_GROUP] = (uint32_t)g;
    l->push[W_HV] = p->HV;
    l->push[W_NCHUNKS] = (uint32_t)nc;
    const vkla_tensor *ts[3] = {&a->dq, &a->dk, &a->dv};
    for (int i = 0; i < 3; i++) {
        uint64_t st[VKLA_MAX_DIMS];
        if (!ts[i]->buffer)
            continue;
        vkla__tensor_strides(ts[i], st);
        for (int d = 0; d < 3; d++)
            l->push[SW_STRIDES + i * 3 + d] = (uint32_t)st[d];
    }
    l->push_words = SW_COUNT;
    for (int i = 0; i < S_COUNT; i++)
        l->base_word[i] = i < 6 ? SW_BASES + i : -1;
    l->split_word = W_SPLIT;
    l->nbind = S_COUNT;
    l->binds = sbinds;
    l->grid_x = bp->groups;
    l->grid_z = VKLA_GRID_CHUNKS;
    return VKLA_SUCCESS;
}

static vkla_result record(vkla_context *ctx, VkCommandBuffer cmd,
                          const vkla_delta_rule_backward_args *a, bool run_mode)
{
    bplan bp;
    vkla_result r = make_plan(ctx, a, &bp);
    if (r != VKLA_SUCCESS)
        return r;
    vkla_dr_plan *p = &bp.fp;
    const vkla_delta_rule_args *f = &a->fwd;
    vkla_split *splits = NULL, *bsplits = NULL, *ssplits = NULL;
    uint32_t nsplit = 0, nbsplit = 0, nssplit = 0;
    vkla_buffer *scr;
    uint64_t soff;
    r = vkla__resolve_scratch(ctx, OP, bp.scratch_bytes, a->scratch, a->scratch_offset, run_mode,
                              16, &scr, &soff);
    if (r != VKLA_SUCCESS)
        goto done;

    /* steps 1 and 2: the forward's kernels, T stored */
    vkla_bind fb[B_COUNT], bb[B_COUNT], sb[S_COUNT];
    vkla__dr_binds(p, f, scr, soff, fb);
    if ((r = vkla__plan_splits(ctx, &p->seqs, p->HV, fb, B_COUNT, &splits, &nsplit)) != VKLA_SUCCESS)
        goto done;
    if ((r = vkla__dr_begin(ctx, cmd, p, scr, soff)) != VKLA_SUCCESS)
        goto done;
    vkla_launch l;
    memset(&l, 0, sizeof(l));
    vkla__dr_push(p, f, &l);
    l.push[W_FLAGS] |= F_STORE_T;
    l.nbind = B_COUNT;
    l.binds = fb;
    if ((r = vkla__dr_prep_scan(ctx, cmd, p, splits, nsplit, &l)) != VKLA_SUCCESS)
        goto done;

    /* steps 3 to 5: the same bindings, with dout, the backward records, the carried state
     * gradient, dht and dh0 in the slots of o, beta, g, h0 and ht (shaders/delta_rule/
     * common.glsl) */
    memcpy(bb, fb, sizeof(bb));
    uint64_t nc = p->seqs.nchunks, kv = (uint64_t)p->K * p->V;
    bb[B_O] = vkla__bind_tensor(&a->dout, VKLA_ROWS_TOKENS);
    bb[B_BETA] = vkla__bind_region(scr, soff + bp.off_bwd, 16, VKLA_ROWS_CHUNKS, bp.rec,
                                   nc * bp.rec, bp.rec, 0);
    bb[B_G] = vkla__bind_region(scr, soff + bp.off_carry, 4, VKLA_ROWS_SEQS, p->HV * kv, kv,
                                kv, 0);
    bb[B_H0] = vkla__bind_tensor(&a->dht, VKLA_ROWS_SEQS);
    bb[B_HT] = vkla__bind_tensor(&a->dh0, VKLA_ROWS_SEQS);
    if ((r = vkla__plan_splits(ctx, &p->seqs, p->HV, bb, B_COUNT, &bsplits, &nbsplit)) != VKLA_SUCCESS)
        goto done;
    uint64_t st[VKLA_MAX_DIMS];
    vkla__tensor_strides(&a->dout, st);
    for (int d = 0; d < 3; d++)
        l.push[W_STRIDES + 9 + d] = (uint32_t)st[d];
    uint32_t flags = (p->flags & ~(uint32_t)(F_H0 | F_HT | F_STORE_T | F_O4)) |
                     (a->dht.buffer ? F_H0 : 0) | (a->dh0.buffer ? F_HT : 0) |
                     (vkla__vec4_view(ctx, &a->dout) ? F_O4 : 0);
    l.binds = bb;
    /* bwd_scan: threads of four value columns each; dS and dV' columns fit 32 KiB */
    uint32_t vt = 2048 / (p->K + p->C);
    vt = vt > 16 ? 16 : vt < 1 ? 1 : vt;
    /* kernel, its steps (dispatches, each with its number in the flags' high bits), grid */
    struct {
        const char *kernel;
        uint32_t steps, threads, grid_x;
        vkla_grid_z z;
    } kernels[3] = {{"bwd_local", 2, 64, bp.groups, VKLA_GRID_CHUNKS},
                    {"bwd_scan", bp.passes, vt, (p->V4 + vt - 1) / vt, VKLA_GRID_SEQS},
                    {"bwd_grad", 4, 64, bp.groups, VKLA_GRID_CHUNKS}};
    /* the per-launch models of steps 3 to 5 (docs/bench.md): FLOPs and bytes per (kernel, step);
     * bwd_scan's are those of all its passes, shared evenly */
    const vkla_dr_sizes z = vkla__dr_sizes(p);
    const double tri = z.HV * (z.cs.s2 + z.cs.s1), sq = z.HV * z.cs.s2, cub = z.HV * z.cs.s3;
    const double kvt = z.HV * 2 * z.K * z.V * z.tok, tv = 4 * z.HV * z.tok * z.V;
    const double blk = 4 * sq, dst = 4 * z.HV * p->N * z.K * z.V;
    const double model[3][4][2] = {
        {{tri * z.K, z.qk + z.gates + 2 * blk}, {tri * z.V + kvt, blk + z.vo + z.qk / 2 + tv + z.states}},
        {{2 * kvt + z.HV * 2 * z.K * z.V * z.cs.n,
          z.work * 2 / 3 + 2 * tv + 2 * z.states + dst * (!!a->dht.buffer + !!a->dh0.buffer)}},
        {{2 * kvt + tri * z.V + sq * z.V, z.vo + 2 * tv + 2 * z.states + blk},
         {kvt + sq * z.V + 2 * cub / 3, 2 * tv + z.states + 2 * blk},
         {tri * 3 * z.K + 6 * sq * z.K, z.qk + 2 * blk + z.work},
         {0, 2 * z.work}}};
    for (int i = 0; i < 3; i++) {
        if ((r = pipeline(ctx, p, kernels[i].kernel, kernels[i].threads, kernels[i].threads,
                          bp.nper, B_COUNT, &l.pipe)) != VKLA_SUCCESS)
            goto done;
        l.grid_x = kernels[i].grid_x;
        l.grid_z = kernels[i].z;
        /* with one workgroup per chunk, bwd_grad runs its four steps in one dispatch (step 4) */
        const int merged = i == 2 && bp.groups == 1;
        for (uint32_t k = 0; k < (merged ? 1 : kernels[i].steps); k++) {
            vkla__compute_barrier(ctx, cmd);
            l.push[W_FLAGS] = flags | (merged ? 4 : k) << 16;
            const double(*m)[2] = model[i], share = i == 1 ? kernels[i].steps : 1;
            l.flops = m[i == 1 ? 0 : k][0] / share;
            l.bytes = m[i == 1 ? 0 : k][1] / share;
            for (uint32_t s = 1; merged && s < kernels[i].steps; s++) {
                l.flops += m[s][0];
                l.bytes += m[s][1];
            }
            if ((r = vkla__launch_splits(ctx, cmd, &p->seqs, bsplits, nbsplit, &l)) != VKLA_SUCCESS)
                goto done;
        }
    }

    /* step 6 */
    if (bp.out & (O_DQ | O_DK | O_DV | O_DB | O_DG)) {
        if ((r = store_launch(ctx, &bp, a, fb, scr, soff, sb, &l)) != VKLA_SUCCESS)
            goto done;
        if ((r = vkla__plan_splits(ctx, &p->seqs, p->H, sb, S_COUNT, &ssplits, &nssplit)) != VKLA_SUCCESS)
            goto done;
        vkla__compute_barrier(ctx, cmd);
        l.flops = 0;
        l.bytes = z.work * (2 * z.K + z.V + 2) / (2 * z.K + z.V) + z.qk + z.vo + z.gates;
        r = vkla__launch_splits(ctx, cmd, &p->seqs, ssplits, nssplit, &l);
    }
done:
    free(splits);
    free(bsplits);
    free(ssplits);
    vkla__seqs_free(&p->seqs);
    return r;
}

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    bplan bp;
    vkla_result r = make_plan(ctx, (const vkla_delta_rule_backward_args *)args, &bp);
    if (r != VKLA_SUCCESS)
        return r;
    *bytes = bp.scratch_bytes;
    vkla__seqs_free(&bp.fp.seqs);
    return VKLA_SUCCESS;
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    return record(ctx, cmd, (const vkla_delta_rule_backward_args *)args, run_mode);
}

/* Calls split along T (host/tsplit.c) */
#define FB(f) ((uint16_t)offsetof(vkla_delta_rule_backward_args, f))
#define FA(f) ((uint16_t)offsetof(vkla_delta_rule_args, f))
static const vkla_op_impl ONE = {OP, op_scratch, op_record};
static const vkla_tsplit_desc TSPLIT = {
    .one = &ONE,
    .args_size = sizeof(vkla_delta_rule_backward_args),
    .tok = {FB(fwd.q), FB(fwd.k), FB(fwd.v), FB(fwd.beta), FB(fwd.g), FB(dout), FB(dq), FB(dk),
            FB(dv), FB(dbeta), FB(dg)},
    .ntok = 11,
    .rows = {FB(fwd.h0), FB(dht), FB(dh0)},
    .nrows = 3,
    .fwd = FB(fwd),
    .cu = FA(cu_seqlens), .num_seqs = FA(num_seqs), .chunk_size = FA(chunk_size),
    .s_in = {FA(h0)}, .s_out = {FA(ht)}, .nstate = 1,
    .scratch = FB(scratch), .scratch_offset = FB(scratch_offset),
    .fscratch = FA(scratch), .fscratch_offset = FA(scratch_offset),
    .backward = true, .dht = FB(dht), .dh0 = FB(dh0),
    .states = &vkla__dr_states_impl,
    .state_shape = vkla__dr_state_shape,
};
#undef FA
#undef FB

VKLA_TSPLIT_IMPL(IMPL, OP, TSPLIT);

vkla_result vkla_delta_rule_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                            const vkla_delta_rule_backward_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_delta_rule_backward_run(vkla_context *ctx,
                                         const vkla_delta_rule_backward_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_delta_rule_backward_scratch_size(vkla_context *ctx,
                                                  const vkla_delta_rule_backward_args *args,
                                                  uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_delta_rule_backward_bench(vkla_context *ctx,
                                           const vkla_delta_rule_backward_args *args,
                                           uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
