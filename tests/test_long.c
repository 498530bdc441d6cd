/* Long sequences (docs/long-sequences.md): calls of linear_attn and delta_rule, forward (chunk
 * and recurrent forms) and backward, that run as several calls on pieces of T, against the
 * float64 reference.
 *
 * The first group runs on the device's own maxStorageBufferRange: q, k and v are views of one
 * fused buffer whose token stride puts one head's slab beyond the range where the device
 * reports at most 128 MiB (lavapipe), so the ops must split. The second group forces pieces
 * on small shapes: VKLA_MAX_STORAGE_RANGE (read when the context is made) shrinks the range to
 * 64 KiB, and vkla_context_set_scratch_limit bounds the scratch. Cases cover odd T (not a
 * multiple of the chunk or the piece), varlen with a long sequence among short ones, h0/ht and
 * dht/dh0, gates, grouped value heads, and the caller's scratch of exactly the reported size
 * between guard regions. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OP_LA = 0, OP_DR = 1 };

typedef struct lcase {
    int op;
    vkla_form form;
    int backward;
    uint32_t B, T, H, HV, K, V, C;
    const int32_t *cu;
    uint32_t N;
    int g, gamma, gk, h0, ht, normalize, l2norm;
    vkla_dtype dt;        /* of q, k, v, o and their gradients */
    uint64_t max_scratch; /* the context's scratch limit for the call, 0 = the default */
    uint32_t fused;       /* q, k, v: views of one buffer with this token stride (elements) */
} lcase;

static double *dalloc(size_t n) { return calloc(n + 1, sizeof(double)); }

static uint32_t nseq(const lcase *c) { return c->cu ? c->N : c->B; }

/* inputs, float64 */
typedef struct ldata {
    size_t nq, nv, nt, ns, nz;
    double *q, *k, *v, *g, *gamma, *gk, *beta, *h0, *z0, *dout, *dht;
} ldata;

static void make_data(const lcase *c, ldata *d)
{
    memset(d, 0, sizeof(*d));
    uint32_t hv = c->op == OP_DR ? c->HV : c->H;
    d->nq = (size_t)c->B * c->T * c->H * c->K;
    d->nv = (size_t)c->B * c->T * hv * c->V;
    d->nt = (size_t)c->B * c->T * hv;
    d->ns = (size_t)nseq(c) * hv * c->K * c->V;
    d->nz = (size_t)nseq(c) * c->H * c->K;
    th_rng r;
    th_seed(&r, 1000 + c->T + 7 * c->op + 3 * c->form + c->backward);
    d->q = dalloc(d->nq);
    d->k = dalloc(d->nq);
    d->v = dalloc(d->nv);
    th_fill_normal(&r, d->q, d->nq, 1.0);
    th_fill_normal(&r, d->k, d->nq, 1.0);
    th_unit_rows(d->k, d->nq / c->K, c->K);
    th_fill_normal(&r, d->v, d->nv, 1.0);
    if (c->normalize) { /* positive features keep the denominator away from 0 */
        for (size_t i = 0; i < d->nq; i++) {
            d->q[i] = fabs(d->q[i]) + 0.1;
            d->k[i] = fabs(d->k[i]) + 0.1;
        }
    }
    if (c->g) {
        d->g = dalloc(d->nt);
        th_fill_uniform(&r, d->g, d->nt, -0.3, 0.0);
    }
    if (c->gamma) {
        d->gamma = dalloc(c->H);
        th_fill_uniform(&r, d->gamma, c->H, -0.1, -0.01);
    }
    if (c->gk) {
        d->gk = dalloc(d->nq);
        th_fill_uniform(&r, d->gk, d->nq, -0.2, 0.0);
    }
    if (c->op == OP_DR) {
        d->beta = dalloc(d->nt);
        th_fill_uniform(&r, d->beta, d->nt, 0.1, 0.9);
    }
    if (c->h0) {
        d->h0 = dalloc(d->ns);
        th_fill_normal(&r, d->h0, d->ns, 0.5);
        if (c->normalize) {
            d->z0 = dalloc(d->nz);
            th_fill_uniform(&r, d->z0, d->nz, 0.0, 1.0);
        }
    }
    if (c->backward) {
        d->dout = dalloc(d->nv);
        th_fill_normal(&r, d->dout, d->nv, 1.0);
        if (c->ht) {
            d->dht = dalloc(d->ns);
            th_fill_normal(&r, d->dht, d->ns, 0.5);
        }
    }
    double *all[] = {d->q, d->k, d->v, d->g, d->gamma, d->gk, d->beta, d->h0, d->z0, d->dout, d->dht};
    size_t n[] = {d->nq, d->nq, d->nv, d->nt, c->H, d->nq, d->nt, d->ns, d->nz, d->nv, d->ns};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i])
            th_round(all[i], n[i], i < 3 || i == 9 ? c->dt : VKLA_DTYPE_F32);
}

static void free_data(ldata *d)
{
    double *all[] = {d->q, d->k, d->v, d->g, d->gamma, d->gk, d->beta, d->h0, d->z0, d->dout, d->dht};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]);
}

/* device tensors */
enum { T_Q, T_K, T_V, T_O, T_G, T_GAMMA, T_GK, T_BETA, T_H0, T_HT, T_Z0, T_ZT, T_DOUT, T_DHT,
       T_DQ, T_DK, T_DV, T_DG, T_DGAMMA, T_DGK, T_DBETA, T_DH0, T_SCR, T_COUNT };

typedef struct ldev {
    th_tensor t[T_COUNT];
    vkla_buffer *fused;
} ldev;

static vkla_tensor view(const ldev *x, int i) { return x->t[i].t.buffer ? x->t[i].t : (vkla_tensor){0}; }

static void dev_new(ldev *x, int i, uint32_t ndim, const uint64_t *shape, const double *data)
{
    th_tensor_new(&x->t[i], VKLA_DTYPE_F32, ndim, shape, data);
}

static void dev_new_dt(ldev *x, int i, vkla_dtype dt, uint32_t ndim, const uint64_t *shape,
                       const double *data)
{
    th_tensor_new(&x->t[i], dt, ndim, shape, data);
}

/* q, k, v as views of one buffer: token t of q at t * fused, k after q, v after k */
static void make_fused(const lcase *c, const ldata *d, ldev *x)
{
    vkla_context *ctx = th_ctx();
    uint64_t W = c->fused, bytes = (uint64_t)c->T * W * 4;
    float *host = calloc(c->T * (size_t)W, sizeof(float));
    assert_non_null(host);
    uint32_t hv = c->op == OP_DR ? c->HV : c->H;
    uint64_t rq = (uint64_t)c->H * c->K, rv = (uint64_t)hv * c->V;
    for (uint64_t t = 0; t < c->T; t++) {
        for (uint64_t i = 0; i < rq; i++) {
            host[t * W + i] = (float)d->q[t * rq + i];
            host[t * W + rq + i] = (float)d->k[t * rq + i];
        }
        for (uint64_t i = 0; i < rv; i++)
            host[t * W + 2 * rq + i] = (float)d->v[t * rv + i];
    }
    assert_int_equal(vkla_buffer_create(ctx, bytes, &x->fused), VKLA_SUCCESS);
    assert_int_equal(vkla_buffer_upload(ctx, x->fused, 0, host, bytes), VKLA_SUCCESS);
    free(host);
    uint64_t sq[4] = {1, c->T, c->H, c->K}, sv[4] = {1, c->T, hv, c->V};
    vkla_tensor q = vkla_tensor_make(x->fused, 0, VKLA_DTYPE_F32, 4, sq);
    q.strides[0] = c->T * W;
    q.strides[1] = W;
    vkla_tensor k = q, v = vkla_tensor_make(x->fused, 2 * rq * 4, VKLA_DTYPE_F32, 4, sv);
    k.offset = rq * 4;
    v.strides[0] = c->T * W;
    v.strides[1] = W;
    x->t[T_Q].t = q;
    x->t[T_K].t = k;
    x->t[T_V].t = v;
}

static void make_dev(const lcase *c, const ldata *d, ldev *x)
{
    memset(x, 0, sizeof(*x));
    uint32_t hv = c->op == OP_DR ? c->HV : c->H, N = nseq(c);
    uint64_t sq[4] = {c->B, c->T, c->H, c->K}, sv[4] = {c->B, c->T, hv, c->V};
    uint64_t st[3] = {c->B, c->T, hv}, sh[4] = {N, hv, c->K, c->V}, sz[3] = {N, c->H, c->K};
    uint64_t sgam[1] = {c->H};
    if (c->fused) {
        make_fused(c, d, x);
    } else {
        dev_new_dt(x, T_Q, c->dt, 4, sq, d->q);
        dev_new_dt(x, T_K, c->dt, 4, sq, d->k);
        dev_new_dt(x, T_V, c->dt, 4, sv, d->v);
    }
    if (d->g)
        dev_new(x, T_G, 3, st, d->g);
    if (d->gamma)
        dev_new(x, T_GAMMA, 1, sgam, d->gamma);
    if (d->gk)
        dev_new(x, T_GK, 4, sq, d->gk);
    if (d->beta)
        dev_new(x, T_BETA, 3, st, d->beta);
    if (d->h0)
        dev_new(x, T_H0, 4, sh, d->h0);
    if (d->z0)
        dev_new(x, T_Z0, 3, sz, d->z0);
    if (!c->backward) {
        dev_new_dt(x, T_O, c->dt, 4, sv, NULL);
        if (c->ht) {
            dev_new(x, T_HT, 4, sh, NULL);
            if (c->normalize)
                dev_new(x, T_ZT, 3, sz, NULL);
        }
        return;
    }
    dev_new_dt(x, T_DOUT, c->dt, 4, sv, d->dout);
    if (d->dht)
        dev_new(x, T_DHT, 4, sh, d->dht);
    dev_new_dt(x, T_DQ, c->dt, 4, sq, NULL);
    dev_new_dt(x, T_DK, c->dt, 4, sq, NULL);
    dev_new_dt(x, T_DV, c->dt, 4, sv, NULL);
    if (d->g)
        dev_new(x, T_DG, 3, st, NULL);
    if (d->gamma)
        dev_new(x, T_DGAMMA, 1, sgam, NULL);
    if (d->gk)
        dev_new(x, T_DGK, 4, sq, NULL);
    if (d->beta)
        dev_new(x, T_DBETA, 3, st, NULL);
    if (d->h0)
        dev_new(x, T_DH0, 4, sh, NULL);
}

static void free_dev(ldev *x)
{
    for (int i = 0; i < T_COUNT; i++)
        if (x->t[i].buf && !(x->fused && i <= T_V))
            th_tensor_free(&x->t[i]);
    if (x->fused)
        vkla_buffer_destroy(th_ctx(), x->fused);
}

static vkla_linear_attn_args la_args(const lcase *c, const ldev *x)
{
    vkla_linear_attn_args a = {0};
    a.form = c->form;
    a.q = view(x, T_Q);
    a.k = view(x, T_K);
    a.v = view(x, T_V);
    a.o = view(x, T_O);
    a.g = view(x, T_G);
    a.g_gamma = view(x, T_GAMMA);
    a.gk = view(x, T_GK);
    a.h0 = view(x, T_H0);
    a.ht = view(x, T_HT);
    a.z0 = view(x, T_Z0);
    a.zt = view(x, T_ZT);
    a.cu_seqlens = c->cu;
    a.num_seqs = c->cu ? c->N : 0;
    a.normalize = c->normalize;
    a.chunk_size = c->C;
    return a;
}

static vkla_delta_rule_args dr_args(const lcase *c, const ldev *x)
{
    vkla_delta_rule_args a = {0};
    a.form = c->form;
    a.q = view(x, T_Q);
    a.k = view(x, T_K);
    a.v = view(x, T_V);
    a.o = view(x, T_O);
    a.beta = view(x, T_BETA);
    a.g = view(x, T_G);
    a.h0 = view(x, T_H0);
    a.ht = view(x, T_HT);
    a.cu_seqlens = c->cu;
    a.num_seqs = c->cu ? c->N : 0;
    a.l2norm = c->l2norm;
    a.chunk_size = c->C;
    return a;
}

/* The scratch bound for the next calls on the test context (0 = the default) */
static void set_bound(uint64_t bytes)
{
    if (vkla_context_set_scratch_limit(th_ctx(), bytes) != VKLA_SUCCESS)
        fail_msg("scratch limit %llu: %s", (unsigned long long)bytes, vkla_last_error(th_ctx()));
}

/* Runs the case's call with the caller's scratch of exactly the reported size (between guards);
 * returns that size. */
static uint64_t run_dev(const lcase *c, ldev *x)
{
    vkla_context *ctx = th_ctx();
    uint64_t need = 0;
    vkla_result r;
    set_bound(c->max_scratch);
    vkla_linear_attn_args la = la_args(c, x);
    vkla_delta_rule_args dr = dr_args(c, x);
    vkla_linear_attn_backward_args lb = {.fwd = la};
    vkla_delta_rule_backward_args db = {.fwd = dr};
    if (c->backward) {
        lb.fwd.o = (vkla_tensor){0};
        lb.fwd.ht = (vkla_tensor){0};
        db.fwd.o = (vkla_tensor){0};
        db.fwd.ht = (vkla_tensor){0};
        lb.dout = db.dout = view(x, T_DOUT);
        lb.dht = db.dht = view(x, T_DHT);
        lb.dq = db.dq = view(x, T_DQ);
        lb.dk = db.dk = view(x, T_DK);
        lb.dv = db.dv = view(x, T_DV);
        lb.dg = db.dg = view(x, T_DG);
        lb.dg_gamma = view(x, T_DGAMMA);
        lb.dgk = view(x, T_DGK);
        db.dbeta = view(x, T_DBETA);
        lb.dh0 = db.dh0 = view(x, T_DH0);
    }
    if (c->op == OP_LA)
        r = c->backward ? vkla_linear_attn_backward_scratch_size(ctx, &lb, &need)
                        : vkla_linear_attn_scratch_size(ctx, &la, &need);
    else
        r = c->backward ? vkla_delta_rule_backward_scratch_size(ctx, &db, &need)
                        : vkla_delta_rule_scratch_size(ctx, &dr, &need);
    if (r != VKLA_SUCCESS)
        fail_msg("scratch_size: %s", vkla_last_error(ctx));
    vkla_tensor scr = {0};
    if (need) {
        uint64_t s1[1] = {(need + 3) / 4};
        dev_new(x, T_SCR, 1, s1, NULL);
        scr = x->t[T_SCR].t;
    }
    la.scratch = lb.scratch = dr.scratch = db.scratch = scr.buffer;
    la.scratch_offset = lb.scratch_offset = dr.scratch_offset = db.scratch_offset = scr.offset;
    if (c->op == OP_LA)
        r = c->backward ? vkla_linear_attn_backward_run(ctx, &lb) : vkla_linear_attn_run(ctx, &la);
    else
        r = c->backward ? vkla_delta_rule_backward_run(ctx, &db) : vkla_delta_rule_run(ctx, &dr);
    set_bound(0);
    if (r != VKLA_SUCCESS)
        fail_msg("run: %s", vkla_last_error(ctx));
    if (need) { /* the guards around the scratch are intact */
        float *tmp = malloc(((need + 3) / 4) * sizeof(float));
        th_tensor_read(&x->t[T_SCR], tmp);
        free(tmp);
    }
    th_check_validation();
    return need;
}

static void compare(const char *name, const char *what, th_tensor *t, const double *ref, size_t n)
{
    float *out = malloc(n * sizeof(float));
    assert_non_null(out);
    th_tensor_read(t, out);
    char label[160];
    snprintf(label, sizeof(label), "%s: %s", name, what);
    th_assert_close(label, ref, out, n, th_target(ref, n, t->t.dtype));
    free(out);
}

static uint64_t run_case(const char *name, const lcase *c)
{
    ldata d;
    make_data(c, &d);
    ldev x;
    make_dev(c, &d, &x);
    uint64_t need = run_dev(c, &x);
    uint32_t N = nseq(c);
    double scale = 1.0 / sqrt((double)c->K);
    vkla_ref_linear_attn_args ra = {
        .B = (int)c->B, .T = (int)c->T, .H = (int)c->H, .K = (int)c->K, .V = (int)c->V,
        .cu_seqlens = c->cu, .N = (int)N, .q = d.q, .k = d.k, .v = d.v, .g = d.g,
        .g_gamma = d.gamma, .gk = d.gk, .h0 = d.h0, .z0 = d.z0, .scale = scale,
        .normalize = c->normalize, .eps = 1e-6};
    vkla_ref_delta_rule_args rd = {
        .B = (int)c->B, .T = (int)c->T, .H = (int)c->H, .HV = (int)c->HV, .K = (int)c->K,
        .V = (int)c->V, .cu_seqlens = c->cu, .N = (int)N, .q = d.q, .k = d.k, .v = d.v,
        .beta = d.beta, .g = d.g, .h0 = d.h0, .scale = scale, .l2norm = c->l2norm};
    if (!c->backward) {
        double *o = dalloc(d.nv), *ht = dalloc(d.ns), *zt = dalloc(d.nz);
        ra.o = rd.o = o;
        ra.ht = rd.ht = ht;
        ra.zt = c->normalize ? zt : NULL;
        assert_int_equal(c->op == OP_LA ? vkla_ref_linear_attn(&ra) : vkla_ref_delta_rule(&rd), 0);
        compare(name, "o", &x.t[T_O], o, d.nv);
        if (c->ht)
            compare(name, "ht", &x.t[T_HT], ht, d.ns);
        if (c->ht && c->normalize)
            compare(name, "zt", &x.t[T_ZT], zt, d.nz);
        free(o);
        free(ht);
        free(zt);
    } else {
        double *g[8];
        size_t n[8] = {d.nq, d.nq, d.nv, d.nt, c->H, d.nq, d.nt, d.ns};
        const int slot[8] = {T_DQ, T_DK, T_DV, T_DG, T_DGAMMA, T_DGK, T_DBETA, T_DH0};
        const char *names[8] = {"dq", "dk", "dv", "dg", "dg_gamma", "dgk", "dbeta", "dh0"};
        for (int i = 0; i < 8; i++)
            g[i] = x.t[slot[i]].buf ? dalloc(n[i]) : NULL;
        if (c->op == OP_LA) {
            vkla_ref_linear_attn_backward_args rb = {
                .fwd = &ra, .dout = d.dout, .dht = d.dht, .dq = g[0], .dk = g[1], .dv = g[2],
                .dg = g[3], .dg_gamma = g[4], .dgk = g[5], .dh0 = g[7]};
            assert_int_equal(vkla_ref_linear_attn_backward(&rb), 0);
        } else {
            vkla_ref_delta_rule_backward_args rb = {
                .fwd = &rd, .dout = d.dout, .dht = d.dht, .dq = g[0], .dk = g[1], .dv = g[2],
                .dbeta = g[6], .dg = g[3], .dh0 = g[7]};
            assert_int_equal(vkla_ref_delta_rule_backward(&rb), 0);
        }
        for (int i = 0; i < 8; i++) {
            if (g[i])
                compare(name, names[i], &x.t[slot[i]], g[i], n[i]);
            free(g[i]);
        }
    }
    free_dev(&x);
    free_data(&d);
    return need;
}

/* ------------------------------------------------------------------------------------------ */
/* On the device's own range                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* one token row of the fused buffer: 64 KiB, so 2304 tokens span 144 MiB */
static lcase fused_case(int op, vkla_form form, int backward)
{
    lcase c = {.op = op, .form = form, .backward = backward, .B = 1, .T = 2304, .H = 1, .HV = 1,
               .K = 32, .V = 32, .C = 64, .g = 1, .h0 = 1, .ht = 1, .fused = 16384};
    return c;
}

static void test_beyond_range(void **state)
{
    (void)state;
    vkla_device_info info;
    vkla_context_device_info(th_ctx(), &info);
    lcase c = fused_case(OP_DR, VKLA_FORM_CHUNK, 0);
    uint64_t slab = ((uint64_t)(c.T - 1) * c.fused + c.K) * 4;
    fprintf(stderr, "maxStorageBufferRange %llu, one head's slab of q %llu bytes%s\n",
            (unsigned long long)info.max_storage_buffer_range, (unsigned long long)slab,
            slab > info.max_storage_buffer_range ? " (split)" : "");
    run_case("delta_rule chunk, fused 144 MiB", &c);
    c = fused_case(OP_DR, VKLA_FORM_RECURRENT, 0);
    run_case("delta_rule recurrent, fused 144 MiB", &c);
    c = fused_case(OP_DR, VKLA_FORM_CHUNK, 1);
    run_case("delta_rule backward, fused 144 MiB", &c);
    c = fused_case(OP_LA, VKLA_FORM_CHUNK, 0);
    run_case("linear_attn chunk, fused 144 MiB", &c);
    c = fused_case(OP_LA, VKLA_FORM_RECURRENT, 0);
    run_case("linear_attn recurrent, fused 144 MiB", &c);
    c = fused_case(OP_LA, VKLA_FORM_CHUNK, 1);
    c.gamma = 1;
    run_case("linear_attn backward, fused 144 MiB", &c);
}

/* Sequences longer than a piece's 32768 tokens, which fit the range: one loop over 120k
 * tokens (1875 chunks) met llvmpipe's limit of 65535 loop iterations (NaN outputs). */
static void test_many_tokens(void **state)
{
    (void)state;
    lcase c = {.op = OP_DR, .form = VKLA_FORM_CHUNK, .B = 1, .T = 120000, .H = 1, .HV = 1,
               .K = 64, .V = 4, .C = 64, .g = 1, .h0 = 1, .ht = 1};
    run_case("delta_rule chunk, T=120000", &c);
    c = (lcase){.op = OP_LA, .form = VKLA_FORM_RECURRENT, .B = 1, .T = 70001, .H = 1, .HV = 1,
                .K = 16, .V = 4, .C = 64, .g = 1, .h0 = 1, .ht = 1};
    run_case("linear_attn recurrent, T=70001", &c);
}

/* ------------------------------------------------------------------------------------------ */
/* Forced pieces (range 64 KiB, scratch bounds per case)                                       */
/* ------------------------------------------------------------------------------------------ */

static const int32_t cu_long[] = {0, 5, 37, 300, 310, 330, 331};

static lcase small_case(int op, vkla_form form, int backward)
{
    lcase c = {.op = op, .form = form, .backward = backward, .B = 2, .T = 203, .H = 2, .HV = 2,
               .K = 16, .V = 16, .C = 16, .g = 1, .h0 = 1, .ht = 1, .max_scratch = 12288};
    return c;
}

static void varlen(lcase *c)
{
    c->B = 1;
    c->T = 331;
    c->cu = cu_long;
    c->N = 6;
}

static void test_linear_attn_forward(void **state)
{
    (void)state;
    lcase c = small_case(OP_LA, VKLA_FORM_CHUNK, 0);
    c.gamma = 1;
    uint64_t bounded = run_case("linear_attn chunk, B=2 T=203", &c);
    c.max_scratch = 0;
    uint64_t unbounded = run_case("linear_attn chunk, B=2 T=203, no bound", &c);
    fprintf(stderr, "linear_attn scratch %llu bytes bounded, %llu not\n",
            (unsigned long long)bounded, (unsigned long long)unbounded);
    assert_true(bounded < unbounded);
    c = small_case(OP_LA, VKLA_FORM_CHUNK, 0);
    c.gk = 1;
    c.normalize = 1;
    varlen(&c);
    run_case("linear_attn chunk, varlen, gk, normalize", &c);
    c = small_case(OP_LA, VKLA_FORM_CHUNK, 0);
    c.B = 5;
    c.T = 40;
    c.dt = VKLA_DTYPE_F16;
    c.max_scratch = 20000; /* two rows a call */
    run_case("linear_attn chunk f16, groups of batch rows", &c);
    c = small_case(OP_LA, VKLA_FORM_CHUNK, 0);
    c.h0 = c.ht = 0;
    c.C = 32;
    c.T = 257;
    run_case("linear_attn chunk 32, no states", &c);
    /* recurrent: one head's slab of q (T x 128 bytes) is beyond 64 KiB */
    c = small_case(OP_LA, VKLA_FORM_RECURRENT, 0);
    c.T = 701;
    c.B = 1;
    c.gk = 1;
    run_case("linear_attn recurrent, T=701", &c);
    varlen(&c);
    c.T = 1030;
    static const int32_t cu2[] = {0, 5, 37, 300, 310, 330, 1030};
    c.cu = cu2;
    run_case("linear_attn recurrent, varlen", &c);
}

static void test_delta_rule_forward(void **state)
{
    (void)state;
    lcase c = small_case(OP_DR, VKLA_FORM_CHUNK, 0);
    run_case("delta_rule chunk, B=2 T=203", &c);
    c = small_case(OP_DR, VKLA_FORM_CHUNK, 0);
    varlen(&c);
    c.H = 1;
    c.HV = 2;
    c.l2norm = 1;
    c.max_scratch = 20000;
    run_case("delta_rule chunk, varlen, grouped heads, l2norm", &c);
    c.dt = VKLA_DTYPE_BF16;
    run_case("delta_rule chunk bf16, varlen", &c);
    c = small_case(OP_DR, VKLA_FORM_RECURRENT, 0);
    c.B = 1;
    c.T = 701;
    run_case("delta_rule recurrent, T=701", &c);
}

static void test_linear_attn_backward(void **state)
{
    (void)state;
    lcase c = small_case(OP_LA, VKLA_FORM_CHUNK, 1);
    c.gamma = 1;
    c.gk = 1;
    c.max_scratch = 24000;
    run_case("linear_attn backward, B=2 T=203", &c);
    c = small_case(OP_LA, VKLA_FORM_RECURRENT, 1);
    c.gamma = 1;
    c.max_scratch = 24000;
    varlen(&c);
    run_case("linear_attn backward, varlen", &c);
    c.h0 = c.ht = 0;
    c.g = 0;
    c.dt = VKLA_DTYPE_BF16;
    run_case("linear_attn backward bf16, varlen, no states", &c);
}

static void test_delta_rule_backward(void **state)
{
    (void)state;
    lcase c = small_case(OP_DR, VKLA_FORM_CHUNK, 1);
    c.max_scratch = 0; /* the range bounds it */
    c.T = 150;
    run_case("delta_rule backward, B=2 T=150", &c);
    c = small_case(OP_DR, VKLA_FORM_CHUNK, 1);
    c.max_scratch = 0;
    varlen(&c);
    c.H = 1;
    c.HV = 2;
    c.l2norm = 1;
    c.dt = VKLA_DTYPE_F16;
    run_case("delta_rule backward f16, varlen, grouped heads, l2norm", &c);
}

static void test_errors(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    /* a bound below one chunk of one sequence (K = V = C = 64: one chunk's state is 16 KiB) */
    lcase c = small_case(OP_LA, VKLA_FORM_CHUNK, 0);
    c.K = c.V = c.C = 64;
    ldata d;
    make_data(&c, &d);
    ldev x;
    make_dev(&c, &d, &x);
    vkla_linear_attn_args a = la_args(&c, &x);
    uint64_t need;
    set_bound(4096);
    assert_int_equal(vkla_linear_attn_run(ctx, &a), VKLA_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkla_last_error(ctx), "one chunk of one sequence"));
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a, &need), VKLA_ERROR_UNSUPPORTED);
    set_bound(0);
    free_dev(&x);
    free_data(&d);
    /* the backward with normalize cannot carry the normalizer's gradient between pieces */
    c = small_case(OP_LA, VKLA_FORM_CHUNK, 0);
    make_data(&c, &d);
    make_dev(&c, &d, &x);
    a = la_args(&c, &x);
    set_bound(12288);
    vkla_linear_attn_backward_args b = {.fwd = a};
    b.fwd.normalize = 1;
    b.fwd.o = b.fwd.ht = (vkla_tensor){0};
    b.dout = view(&x, T_O);
    assert_int_equal(vkla_linear_attn_backward_scratch_size(ctx, &b, &need), VKLA_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkla_last_error(ctx), "normalize"));
    /* bad arguments are still reported as such */
    a.chunk_size = 48;
    assert_int_equal(vkla_linear_attn_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT);
    set_bound(0);
    free_dev(&x);
    free_data(&d);
    th_check_validation();
}

int main(void)
{
    const struct CMUnitTest real[] = {
        cmocka_unit_test(test_beyond_range),
        cmocka_unit_test(test_many_tokens),
    };
    const struct CMUnitTest forced[] = {
        cmocka_unit_test(test_linear_attn_forward),
        cmocka_unit_test(test_delta_rule_forward),
        cmocka_unit_test(test_linear_attn_backward),
        cmocka_unit_test(test_delta_rule_backward),
        cmocka_unit_test(test_errors),
    };
    unsetenv("VKLA_MAX_STORAGE_RANGE");
    unsetenv("VKLA_MAX_SCRATCH");
    int fails = cmocka_run_group_tests_name("device range", real, th_setup, th_teardown);
    setenv("VKLA_MAX_STORAGE_RANGE", "65536", 1);
    fails += cmocka_run_group_tests_name("forced pieces", forced, th_setup, th_teardown);
    return fails;
}
