/* Backward pass of LION (SPEC sections 3 and 4): the float64 reference gradients against central
 * finite differences of the float64 forward, the device gradients against the reference for
 * every variant (LIT, D, S, D+S) x normalize x dtype, lengths, chunk sizes, odd and large head
 * sizes, varlen, every forward form, partial requests, fused gradient views, caller scratch,
 * and the error paths. Every output tensor has guard regions. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { G = 1, GAMMA = 2 };
enum { W_DQ = 1, W_DK = 2, W_DV = 4, W_DG = 8, W_DGAMMA = 16, W_ALL = 31 };

typedef struct bcase {
    uint32_t B, T, H, K, V;
    int gates;          /* G (LION-S), GAMMA (LION-D), both, or 0 (LION-LIT) */
    int normalize;
    vkla_dtype dt;
    vkla_form form;
    uint32_t chunk;
    const int32_t *cu;
    uint32_t N;
    uint64_t seed;
    double gmin, gmax;  /* g in [gmin, gmax) (default [-1, 0)) */
    int want;           /* gradients to request (default all that exist) */
    double split;       /* > 0: a scratch limit of this fraction of the call's own need */
} bcase;

typedef struct bdata {
    size_t nq, nv, ng;
    double *q, *k, *v, *g, *gamma, *dout;
    double *dq, *dk, *dv, *dg, *dgamma; /* reference */
    double *dgabs;                       /* sum_t |da_t| per head (with g_gamma) */
} bdata;

static void make_data(const bcase *c, bdata *d)
{
    memset(d, 0, sizeof(*d));
    d->nq = (size_t)c->B * c->T * c->H * c->K;
    d->nv = (size_t)c->B * c->T * c->H * c->V;
    d->ng = (size_t)c->B * c->T * c->H;
    th_rng r;
    th_seed(&r, c->seed ? c->seed : 1);
    d->q = malloc(d->nq * 8);
    d->k = malloc(d->nq * 8);
    d->v = malloc(d->nv * 8);
    d->dout = malloc(d->nv * 8);
    if (c->normalize) { /* positive feature maps keep the denominators away from 0 */
        th_fill_uniform(&r, d->q, d->nq, 0.05, 1.0);
        th_fill_uniform(&r, d->k, d->nq, 0.05, 1.0);
    } else {
        th_fill_normal(&r, d->q, d->nq, 1.0);
        th_fill_normal(&r, d->k, d->nq, 1.0);
        th_unit_rows(d->k, d->nq / c->K, c->K);
    }
    th_fill_normal(&r, d->v, d->nv, 1.0);
    th_fill_normal(&r, d->dout, d->nv, 1.0);
    th_round(d->q, d->nq, c->dt);
    th_round(d->k, d->nq, c->dt);
    th_round(d->v, d->nv, c->dt);
    th_round(d->dout, d->nv, c->dt);
    if (c->gates & G) {
        d->g = malloc(d->ng * 8);
        th_fill_uniform(&r, d->g, d->ng, c->gmin != 0 ? c->gmin : -1.0, c->gmax);
        th_round(d->g, d->ng, VKLA_DTYPE_F32);
    }
    if (c->gates & GAMMA) {
        d->gamma = malloc(c->H * 8);
        th_fill_uniform(&r, d->gamma, c->H, -0.5, -0.01);
        th_round(d->gamma, c->H, VKLA_DTYPE_F32);
    }
}

static vkla_ref_lion_args ref_args(const bcase *c, const bdata *d, double *o)
{
    vkla_ref_lion_args ra = {
        .B = (int)c->B, .T = (int)c->T, .H = (int)c->H, .K = (int)c->K, .V = (int)c->V,
        .cu_seqlens = c->cu, .N = (int)(c->cu ? c->N : c->B), .q = d->q, .k = d->k, .v = d->v,
        .g = d->g, .g_gamma = d->gamma, .scale = 1.0 / sqrt((double)c->K),
        .normalize = c->normalize, .eps = 1e-6, .o = o};
    return ra;
}

/* sum_t |da_t| per head (da: the gradient of each token's log decay) */
static void decay_magnitudes(const bcase *c, bdata *d)
{
    double *zero = d->g ? NULL : calloc(d->ng, 8);
    double *da = malloc(d->ng * 8);
    vkla_ref_lion_args ra = ref_args(c, d, NULL);
    ra.g = d->g ? d->g : zero;
    vkla_ref_lion_backward_args rb = {.fwd = &ra, .dout = d->dout, .dg = da};
    assert_int_equal(vkla_ref_lion_backward(&rb), 0);
    d->dgabs = calloc(c->H, 8);
    for (size_t i = 0; i < d->ng; i++)
        d->dgabs[i % c->H] += fabs(da[i]);
    free(zero);
    free(da);
}

static void ref_grads(const bcase *c, bdata *d)
{
    d->dq = malloc(d->nq * 8);
    d->dk = malloc(d->nq * 8);
    d->dv = malloc(d->nv * 8);
    d->dg = d->g ? malloc(d->ng * 8) : NULL;
    d->dgamma = d->gamma ? malloc(c->H * 8) : NULL;
    vkla_ref_lion_args ra = ref_args(c, d, NULL);
    vkla_ref_lion_backward_args rb = {.fwd = &ra, .dout = d->dout, .dq = d->dq, .dk = d->dk,
                                      .dv = d->dv, .dg = d->dg, .dg_gamma = d->dgamma};
    assert_int_equal(vkla_ref_lion_backward(&rb), 0);
    if (d->gamma)
        decay_magnitudes(c, d);
}

static void free_data(bdata *d)
{
    free(d->q); free(d->k); free(d->v); free(d->g); free(d->gamma); free(d->dout);
    free(d->dq); free(d->dk); free(d->dv); free(d->dg); free(d->dgamma); free(d->dgabs);
}

/* L = sum(dout * o) of the float64 forward */
static double loss(const bcase *c, const bdata *d)
{
    double *o = malloc(d->nv * 8);
    vkla_ref_lion_args ra = ref_args(c, d, o);
    assert_int_equal(vkla_ref_lion(&ra), 0);
    double l = 0.0;
    for (size_t i = 0; i < d->nv; i++)
        l += d->dout[i] * o[i];
    free(o);
    return l;
}

/* central differences of L with respect to every element of x, against the reference */
static void check_fd(const char *what, const bcase *c, bdata *d, double *x, size_t n,
                     const double *grad)
{
    double *fd = malloc(n * 8);
    const double eps = 1e-5;
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + eps;
        const double lp = loss(c, d);
        x[i] = x0 - eps;
        const double lm = loss(c, d);
        x[i] = x0;
        fd[i] = (lp - lm) / (2 * eps);
    }
    /* the finite differences as the reference of the hand-derived gradient */
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += (fd[i] - grad[i]) * (fd[i] - grad[i]);
        den += fd[i] * fd[i];
    }
    const double nmse = den > 0 ? num / den : num;
    if (!(nmse <= 1e-12))
        fail_msg("%s: reference vs finite differences NMSE %.3e > 1e-12", what, nmse);
    free(fd);
}

static const char *variant_name(int gates)
{
    return gates == (G | GAMMA) ? "S+D" : gates == G ? "S" : gates == GAMMA ? "D" : "LIT";
}

/* (a) the reference against finite differences: every variant, normalize, varlen */
static void test_reference_fd(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 1, 6, 6, 11};
    const int gates[] = {0, GAMMA, G, G | GAMMA};
    for (int gi = 0; gi < 4; gi++)
        for (int nz = 0; nz < 2; nz++)
            for (int vl = 0; vl < 2; vl++) {
                bcase c = {.B = vl ? 1 : 2, .T = vl ? 11 : 7, .H = 2, .K = 3, .V = 4,
                           .gates = gates[gi], .normalize = nz, .dt = VKLA_DTYPE_F32,
                           .cu = vl ? cu : NULL, .N = 4, .seed = 11 + gi * 4 + nz * 2 + vl};
                bdata d;
                make_data(&c, &d);
                ref_grads(&c, &d);
                char what[96];
                const char *vn = variant_name(gates[gi]);
#define FD(name, x, n, gr)                                                                     \
                snprintf(what, sizeof(what), "fd %s%s%s %s", vn, nz ? " normalize" : "",       \
                         vl ? " varlen" : "", name);                                            \
                check_fd(what, &c, &d, x, n, gr);
                FD("dq", d.q, d.nq, d.dq)
                FD("dk", d.k, d.nq, d.dk)
                FD("dv", d.v, d.nv, d.dv)
                if (d.g) {
                    FD("dg", d.g, d.ng, d.dg)
                }
                if (d.gamma) {
                    FD("dg_gamma", d.gamma, c.H, d.dgamma)
                }
#undef FD
                free_data(&d);
            }
}

/* Runs the backward on the device and checks every requested gradient (guards included). */
static void run_case(const char *name, const bcase *c)
{
    bdata d;
    make_data(c, &d);
    ref_grads(c, &d);
    int want = c->want ? c->want : W_ALL;
    if (!d.g)
        want &= ~W_DG;
    if (!d.gamma)
        want &= ~W_DGAMMA;
    uint64_t sq[4] = {c->B, c->T, c->H, c->K}, sv[4] = {c->B, c->T, c->H, c->V};
    uint64_t sg[3] = {c->B, c->T, c->H}, sgam[1] = {c->H};
    th_tensor q, k, v, dout, g = {0}, gamma = {0};
    th_tensor dq = {0}, dk = {0}, dv = {0}, dg = {0}, dgamma = {0};
    th_tensor_new(&q, c->dt, 4, sq, d.q);
    th_tensor_new(&k, c->dt, 4, sq, d.k);
    th_tensor_new(&v, c->dt, 4, sv, d.v);
    th_tensor_new(&dout, c->dt, 4, sv, d.dout);
    vkla_lion_backward_args a = {0};
    a.fwd.form = c->form;
    a.fwd.q = q.t; a.fwd.k = k.t; a.fwd.v = v.t;
    if (d.g) { th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g); a.fwd.g = g.t; }
    if (d.gamma) {
        th_tensor_new(&gamma, VKLA_DTYPE_F32, 1, sgam, d.gamma);
        a.fwd.g_gamma = gamma.t;
    }
    a.fwd.cu_seqlens = c->cu;
    a.fwd.num_seqs = c->cu ? c->N : 0;
    a.fwd.normalize = c->normalize;
    a.fwd.chunk_size = c->chunk;
    a.dout = dout.t;
    if (want & W_DQ) { th_tensor_new(&dq, c->dt, 4, sq, NULL); a.dq = dq.t; }
    if (want & W_DK) { th_tensor_new(&dk, c->dt, 4, sq, NULL); a.dk = dk.t; }
    if (want & W_DV) { th_tensor_new(&dv, c->dt, 4, sv, NULL); a.dv = dv.t; }
    if (want & W_DG) { th_tensor_new(&dg, VKLA_DTYPE_F32, 3, sg, NULL); a.dg = dg.t; }
    if (want & W_DGAMMA) {
        th_tensor_new(&dgamma, VKLA_DTYPE_F32, 1, sgam, NULL);
        a.dg_gamma = dgamma.t;
    }
    assert_int_equal(vkla_context_set_scratch_limit(th_ctx(), 0), VKLA_SUCCESS);
    if (c->split > 0) { /* pieces of T (host/lion_tsplit.c) */
        uint64_t full = 0, need = 0;
        assert_int_equal(vkla_lion_backward_scratch_size(th_ctx(), &a, &full), VKLA_SUCCESS);
        const uint64_t limit = (uint64_t)(full * c->split);
        assert_int_equal(vkla_context_set_scratch_limit(th_ctx(), limit), VKLA_SUCCESS);
        vkla_result rs = vkla_lion_backward_scratch_size(th_ctx(), &a, &need);
        if (rs != VKLA_SUCCESS || need > limit)
            fail_msg("%s: scratch %llu for a limit of %llu: %s", name, (unsigned long long)need,
                     (unsigned long long)limit, vkla_last_error(th_ctx()));
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vkla_result r = vkla_lion_backward_run(th_ctx(), &a);
    assert_int_equal(vkla_context_set_scratch_limit(th_ctx(), 0), VKLA_SUCCESS);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (getenv("TH_TIME"))
        fprintf(stderr, "%-48s %8.1f ms\n", name,
                (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: %s: %s", name, vkla_result_string(r), vkla_last_error(th_ctx()));
    const struct {
        const char *n;
        th_tensor *t;
        const double *ref;
        size_t count;
        vkla_dtype dt;
    } outs[] = {{"dq", &dq, d.dq, d.nq, c->dt}, {"dk", &dk, d.dk, d.nq, c->dt},
                {"dv", &dv, d.dv, d.nv, c->dt}, {"dg", &dg, d.dg, d.ng, VKLA_DTYPE_F32},
                {"dg_gamma", &dgamma, d.dgamma, c->H, VKLA_DTYPE_F32}};
    for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
        if (!outs[i].t->buf)
            continue;
        float *out = malloc(outs[i].count * sizeof(float));
        th_tensor_read(outs[i].t, out);
        char what[160];
        snprintf(what, sizeof(what), "%s: %s", name, outs[i].n);
        double target = th_target(outs[i].ref, outs[i].count, outs[i].dt);
        if (outs[i].ref == d.dgamma) {
            /* dg_gamma[h] sums the gradients of T log decays, which can cancel to a small
             * fraction of their magnitudes: its fp32 error scales with sum_t |da_t|, so the
             * target is relative to that (the plain NMSE whenever nothing cancels) */
            double num = 0.0, den = 0.0;
            for (uint32_t h = 0; h < c->H; h++) {
                num += d.dgamma[h] * d.dgamma[h];
                den += d.dgabs[h] * d.dgabs[h];
            }
            if (num > 0)
                target *= den / num;
        }
        if (getenv("TH_NMSE"))
            fprintf(stderr, "%-56s NMSE %.3e (target %.1e)\n", what,
                    vkla_ref_nmse(outs[i].ref, out, outs[i].count), target);
        th_assert_close(what, outs[i].ref, out, outs[i].count, target);
        free(out);
    }
    th_tensor *all[] = {&q, &k, &v, &dout, &g, &gamma, &dq, &dk, &dv, &dg, &dgamma};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
    free_data(&d);
    th_check_validation();
}

/* Long sequences: the backward as pieces of T (host/lion_tsplit.c), forced by a scratch limit
 * below the call's own need: both products' states carried across the pieces, the decay
 * gradient's suffix sum and dg_gamma's running sum across pieces and batch rows; odd T, every
 * variant, normalize (its extra sweeps), dtypes, chunk sizes, a partial request. */
static void test_long_pieces(void **state)
{
    (void)state;
    bcase cases[9] = {
        {.B = 2, .T = 203, .H = 2, .K = 20, .V = 24, .gates = G | GAMMA, .dt = VKLA_DTYPE_F32,
         .chunk = 16, .seed = 950, .split = 0.6},
        {.B = 1, .T = 321, .H = 2, .K = 32, .V = 16, .gates = GAMMA, .normalize = 1,
         .dt = VKLA_DTYPE_BF16, .chunk = 16, .seed = 951, .split = 0.6},
        {.B = 2, .T = 200, .H = 1, .K = 12, .V = 20, .normalize = 1, .dt = VKLA_DTYPE_F16,
         .chunk = 32, .seed = 952, .split = 0.7},
        {.B = 2, .T = 150, .H = 2, .K = 16, .V = 16, .gates = G, .normalize = 1,
         .dt = VKLA_DTYPE_F32, .chunk = 16, .seed = 953, .split = 0.6},
        {.B = 1, .T = 450, .H = 1, .K = 16, .V = 32, .gates = G, .dt = VKLA_DTYPE_F32,
         .chunk = 16, .seed = 954, .want = W_DQ | W_DG, .split = 0.5},
    };
    /* and four drawn at random (fixed seed): any K and V, odd T, every option */
    th_rng rr;
    th_seed(&rr, 4343);
    for (int i = 5; i < 9; i++) {
        const th_shape d = th_draw_shape(&rr, 1.99, 200, 400, 1.99);
        cases[i] = (bcase){.B = d.B, .T = d.T, .H = d.H, .K = d.K, .V = d.V, .gates = d.opts,
                           .normalize = d.normalize, .dt = d.dt, .chunk = 16,
                           .seed = 970 + (uint64_t)i, .split = 0.7};
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[96];
        snprintf(name, sizeof(name), "pieces %s%s B=%u T=%u H=%u K=%u V=%u %s",
                 variant_name(cases[i].gates), cases[i].normalize ? " normalize" : "", cases[i].B,
                 cases[i].T, cases[i].H, cases[i].K, cases[i].V, vkla_dtype_name(cases[i].dt));
        run_case(name, &cases[i]);
    }

    /* q, k, v as views of one buffer with 256 KiB between tokens: one (sequence, head) slab of
     * 520 tokens spans 130 MiB, beyond lavapipe's 128 MiB maxStorageBufferRange */
    vkla_context *ctx = th_ctx();
    const bcase c = {.B = 1, .T = 520, .H = 1, .K = 16, .V = 16, .gates = G,
                     .dt = VKLA_DTYPE_F32, .seed = 960};
    bdata d;
    make_data(&c, &d);
    ref_grads(&c, &d);
    uint64_t s4[4] = {1, c.T, 1, 16}, s3[3] = {1, c.T, 1};
    th_tensor dout, g, dq, dk, dv, dg;
    th_tensor_new(&dout, VKLA_DTYPE_F32, 4, s4, d.dout);
    th_tensor_new(&g, VKLA_DTYPE_F32, 3, s3, d.g);
    th_tensor_new(&dq, VKLA_DTYPE_F32, 4, s4, NULL);
    th_tensor_new(&dk, VKLA_DTYPE_F32, 4, s4, NULL);
    th_tensor_new(&dv, VKLA_DTYPE_F32, 4, s4, NULL);
    th_tensor_new(&dg, VKLA_DTYPE_F32, 3, s3, NULL);
    vkla_lion_backward_args a = {0};
    vkla_tensor qkv[3];
    const double *rows[3] = {d.q, d.k, d.v};
    vkla_buffer *fb = th_spread_views(c.T, 16, 65536, 3, rows, qkv);
    a.fwd.q = qkv[0];
    a.fwd.k = qkv[1];
    a.fwd.v = qkv[2];
    a.fwd.g = g.t;
    a.dout = dout.t;
    a.dq = dq.t;
    a.dk = dk.t;
    a.dv = dv.t;
    a.dg = dg.t;
    vkla_result r = vkla_lion_backward_run(ctx, &a);
    if (r != VKLA_SUCCESS)
        fail_msg("slab beyond the range: %s: %s", vkla_result_string(r), vkla_last_error(ctx));
    const struct {
        const char *n;
        th_tensor *t;
        const double *ref;
        size_t count;
    } outs[] = {{"dq", &dq, d.dq, d.nq}, {"dk", &dk, d.dk, d.nq}, {"dv", &dv, d.dv, d.nv},
                {"dg", &dg, d.dg, d.ng}};
    for (int i = 0; i < 4; i++) {
        float *out = malloc(outs[i].count * sizeof(float));
        th_tensor_read(outs[i].t, out);
        char what[64];
        snprintf(what, sizeof(what), "slab beyond the range: %s", outs[i].n);
        th_assert_close(what, outs[i].ref, out, outs[i].count,
                        th_target(outs[i].ref, outs[i].count, VKLA_DTYPE_F32));
        free(out);
    }
    th_tensor *all[] = {&dout, &g, &dq, &dk, &dv, &dg};
    for (int i = 0; i < 6; i++)
        th_tensor_free(all[i]);
    vkla_buffer_destroy(ctx, fb);
    free_data(&d);
    th_check_validation();
}

/* (b) every variant x normalize x dtype; two batch rows, T not a multiple of the chunk */
static void test_variants_dtypes(void **state)
{
    (void)state;
    const int gates[] = {0, GAMMA, G, G | GAMMA};
    const vkla_dtype dts[] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    for (int gi = 0; gi < 4; gi++)
        for (int nz = 0; nz < 2; nz++)
            for (int di = 0; di < 3; di++) {
                bcase c = {.B = 2, .T = 100, .H = 2, .K = 32, .V = 24, .gates = gates[gi],
                           .normalize = nz, .dt = dts[di], .chunk = 32,
                           .seed = (uint64_t)(100 + gi * 7 + nz * 3 + di)};
                char name[96];
                snprintf(name, sizeof(name), "%s%s %s", variant_name(gates[gi]),
                         nz ? " normalize" : "", vkla_dtype_name(dts[di]));
                run_case(name, &c);
            }
}

/* T in {1, 63, 65, 100} with chunk sizes 16, 32, 64, and the three forward forms accepted */
static void test_lengths_chunks_forms(void **state)
{
    (void)state;
    const uint32_t Ts[] = {1, 63, 65, 100};
    const uint32_t cs[] = {16, 32, 64};
    const vkla_form forms[] = {VKLA_FORM_CHUNK, VKLA_FORM_ATTN, VKLA_FORM_RNN,
                               VKLA_FORM_DEFAULT};
    for (int i = 0; i < 4; i++)
        for (int ci = 0; ci < 3; ci++) {
            /* T = 1 with normalize is left out: o = v (A / (A + eps)) makes every gradient
             * O(eps), a cancellation no fp32 evaluation resolves */
            bcase c = {.B = 1, .T = Ts[i], .H = 2, .K = 16, .V = 16, .gates = G | GAMMA,
                       .normalize = i > 0 && (i + ci) % 2, .dt = VKLA_DTYPE_F32, .chunk = cs[ci],
                       .form = forms[(i + ci) % 4], .gmin = -0.5, .seed = 20 + i * 3 + ci};
            char name[96];
            snprintf(name, sizeof(name), "T=%u chunk %u form %s%s", c.T, c.chunk,
                     vkla_form_name(c.form), c.normalize ? " normalize" : "");
            run_case(name, &c);
        }
}

/* K and V: odd sizes (1, 7, 33: packed rows, several of them), and 128 / 256 (several tiles) */
static void test_head_dims(void **state)
{
    (void)state;
    const uint32_t kv[][2] = {{1, 7}, {7, 1}, {33, 7}, {7, 33}, {1, 1}, {128, 33}, {33, 256},
                              {256, 128}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        bcase c = {.B = 1, .T = i >= 5 ? 70 : 90, .H = i >= 5 ? 1 : 2, .K = kv[i][0],
                   .V = kv[i][1], .gates = (i % 2) ? GAMMA : G | GAMMA,
                   .normalize = i == 2 || i == 5 || i == 7, .dt = VKLA_DTYPE_F32,
                   .chunk = i % 3 == 0 ? 16 : 64, .seed = 50 + i};
        char name[64];
        snprintf(name, sizeof(name), "K=%u V=%u%s", c.K, c.V, c.normalize ? " normalize" : "");
        run_case(name, &c);
    }
}

/* packed sequences {1, 63, 65, 17} (and an empty one): nothing crosses a boundary, dg_gamma
 * sums over all of them */
static void test_varlen(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 1, 64, 129, 129, 146};
    const int gates[] = {G, GAMMA, G | GAMMA, 0};
    const vkla_dtype dts[] = {VKLA_DTYPE_F32, VKLA_DTYPE_BF16, VKLA_DTYPE_F16, VKLA_DTYPE_F32};
    for (int gi = 0; gi < 4; gi++)
        for (int nz = 0; nz < 2; nz++) {
            bcase c = {.B = 1, .T = 146, .H = 2, .K = 16, .V = 8, .gates = gates[gi],
                       .normalize = nz, .dt = dts[gi], .cu = cu, .N = 5,
                       .chunk = gi == 0 ? 16 : 64, .gmin = -0.3, .seed = 300 + gi * 2 + nz};
            char name[64];
            snprintf(name, sizeof(name), "varlen %s%s %s", variant_name(gates[gi]),
                     nz ? " normalize" : "", vkla_dtype_name(c.dt));
            run_case(name, &c);
        }
}

/* strong decays (g in [-20, -19): every exponent must stay <= 0), and weak ones over a longer
 * sequence where far tokens matter */
static void test_decay_strength(void **state)
{
    (void)state;
    for (int nz = 0; nz < 2; nz++) {
        bcase s = {.B = 1, .T = 200, .H = 2, .K = 16, .V = 16, .gates = G, .normalize = nz,
                   .dt = VKLA_DTYPE_F32, .gmin = -20.0, .seed = 500 + nz};
        run_case(nz ? "g in [-20, 0) normalize" : "g in [-20, 0)", &s);
        if (!nz) {
            /* every pair decays by e^-19 or more: the decay gradients are tiny next to the
             * diagonal terms, and must not come out of a difference of large numbers */
            s.gmax = -19.0;
            run_case("g in [-20, -19)", &s);
        }
        bcase w = {.B = 1, .T = 300, .H = 2, .K = 32, .V = 32, .gates = G | GAMMA,
                   .normalize = nz, .dt = VKLA_DTYPE_F32, .gmin = -0.01, .chunk = 32,
                   .seed = 510 + nz};
        run_case(nz ? "weak decay T=300 normalize" : "weak decay T=300", &w);
    }
}

/* only some gradients: each alone, and the gate gradients without dq dk dv */
static void test_partial_requests(void **state)
{
    (void)state;
    const int wants[] = {W_DQ, W_DK, W_DV, W_DG, W_DGAMMA, W_DG | W_DGAMMA, W_DQ | W_DV};
    for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
        bcase c = {.B = 1, .T = 80, .H = 2, .K = 12, .V = 20, .gates = G | GAMMA,
                   .normalize = (int)(i % 2), .dt = VKLA_DTYPE_F32, .want = wants[i],
                   .seed = 400 + i};
        char name[64];
        snprintf(name, sizeof(name), "only mask %d%s", wants[i], c.normalize ? " normalize" : "");
        run_case(name, &c);
    }
}

/* the 8 x 8 lane blocks vkla uses on GPUs, forced on this device */
static void test_gpu_blocks(void **state)
{
    (void)state;
    setenv("VKLA_LION_BLOCK", "8", 1);
    static const int32_t cu[] = {0, 70, 71, 130};
    for (int nz = 0; nz < 2; nz++) {
        bcase c = {.B = 1, .T = 130, .H = 2, .K = 72, .V = 40, .gates = G | GAMMA,
                   .normalize = nz, .dt = VKLA_DTYPE_F32, .cu = cu, .N = 3, .chunk = 16,
                   .gmin = -0.2, .seed = 1000 + nz};
        run_case(nz ? "8x8 blocks normalize" : "8x8 blocks", &c);
    }
    unsetenv("VKLA_LION_BLOCK");
}

/* The short-sequence path (host/lion_short.c: LION-LIT with K, V <= 16, one lane per sequence
 * and head), forced on: T = 1, 5, 21, 63, K and V in {1, 5, 11, 16}, normalize (not at T = 1
 * or K = 1, where the output barely depends on q and fp32 cannot resolve the gradients that
 * remain: docs/lion.md, "Limits"), every dtype,
 * several heads and batch rows; partial requests (the dq dispatch and the dk / dv one apart);
 * varlen with an empty and a one-token sequence; a decay still goes to the chunk kernels. */
static void test_short_path(void **state)
{
    (void)state;
    setenv("VKLA_LION_SHORT", "1", 1);
    const uint32_t Ts[] = {1, 5, 21, 63};
    const uint32_t kv[][2] = {{11, 11}, {1, 16}, {16, 1}, {5, 11}};
    const vkla_dtype dts[] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            bcase c = {.B = 1 + (uint32_t)(i + j) % 3, .T = Ts[i], .H = 1 + (uint32_t)j % 3,
                       .K = kv[j][0], .V = kv[j][1], .normalize = i > 0 && kv[j][0] > 1 && (i + j) % 2,
                       .dt = dts[(i + 2 * j) % 3], .seed = 1100 + 10 * i + j};
            char name[96];
            snprintf(name, sizeof(name), "short T=%u K=%u V=%u H=%u%s %s", c.T, c.K, c.V, c.H,
                     c.normalize ? " normalize" : "", vkla_dtype_name(c.dt));
            run_case(name, &c);
        }
    for (int nz = 0; nz < 2; nz++) {
        bcase c = {.B = 2, .T = 21, .H = 2, .K = 16, .V = 16, .normalize = nz,
                   .dt = VKLA_DTYPE_F32, .seed = 1150 + nz};
        run_case(nz ? "short K=V=16 normalize" : "short K=V=16", &c);
    }
    const int wants[] = {W_DQ, W_DK, W_DV, W_DK | W_DV, W_DQ | W_DV};
    for (int i = 0; i < 5; i++) {
        bcase c = {.B = 3, .T = 21, .H = 2, .K = 11, .V = 11, .normalize = i % 2,
                   .dt = VKLA_DTYPE_F32, .want = wants[i], .seed = 1160 + i};
        char name[64];
        snprintf(name, sizeof(name), "short only mask %d%s", wants[i],
                 c.normalize ? " normalize" : "");
        run_case(name, &c);
    }
    static const int32_t cu[] = {0, 1, 22, 22, 85, 90};
    for (int di = 0; di < 3; di++)
        for (int nz = 0; nz < 2; nz++) {
            bcase c = {.B = 1, .T = 90, .H = 2, .K = 11, .V = 7, .normalize = nz,
                       .dt = dts[di], .cu = cu, .N = 5, .seed = 1170 + 2 * di + nz};
            char name[96];
            snprintf(name, sizeof(name), "short varlen%s %s", nz ? " normalize" : "",
                     vkla_dtype_name(c.dt));
            run_case(name, &c);
        }
    bcase gc = {.B = 2, .T = 21, .H = 2, .K = 11, .V = 11, .gates = G | GAMMA, .normalize = 1,
                .dt = VKLA_DTYPE_F32, .seed = 1180};
    run_case("short forced, LION-S+D (chunk kernels)", &gc);
    unsetenv("VKLA_LION_SHORT");
}

/* dq, dk and dv as column ranges of one fused gradient buffer (their rows interleave but never
 * share an element), and a caller scratch at an offset */
static void fused_views_scratch(vkla_dtype dt, int normalize, int gates)
{
    const uint32_t B = 1, T = 70, H = 2, K = 16, V = 8, F = 2 * K + V;
    bcase c = {.B = B, .T = T, .H = H, .K = K, .V = V, .gates = gates, .normalize = normalize,
               .dt = dt, .seed = 77};
    bdata d;
    make_data(&c, &d);
    ref_grads(&c, &d);
    uint64_t sq[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[3] = {B, T, H};
    th_tensor q, k, v, dout, g = {0};
    th_tensor_new(&q, c.dt, 4, sq, d.q);
    th_tensor_new(&k, c.dt, 4, sq, d.k);
    th_tensor_new(&v, c.dt, 4, sv, d.v);
    th_tensor_new(&dout, c.dt, 4, sv, d.dout);
    if (d.g)
        th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g);
    const size_t rows = (size_t)B * T * H, es = vkla_dtype_size(dt);
    vkla_buffer *fb;
    assert_int_equal(vkla_buffer_create(th_ctx(), rows * F * es, &fb), VKLA_SUCCESS);
    vkla_lion_backward_args a = {0};
    a.fwd.q = q.t; a.fwd.k = k.t; a.fwd.v = v.t;
    if (d.g)
        a.fwd.g = g.t;
    a.fwd.normalize = normalize;
    a.dout = dout.t;
    uint64_t st[4] = {(uint64_t)T * H * F, (uint64_t)H * F, F, 1};
    a.dq = vkla_tensor_make(fb, 0, c.dt, 4, sq);
    a.dk = vkla_tensor_make(fb, K * es, c.dt, 4, sq);
    a.dv = vkla_tensor_make(fb, 2 * K * es, c.dt, 4, sv);
    memcpy(a.dq.strides, st, sizeof(st));
    memcpy(a.dk.strides, st, sizeof(st));
    memcpy(a.dv.strides, st, sizeof(st));
    uint64_t need = 0;
    assert_int_equal(vkla_lion_backward_scratch_size(th_ctx(), &a, &need), VKLA_SUCCESS);
    vkla_buffer *scr;
    assert_int_equal(vkla_buffer_create(th_ctx(), need + 512, &scr), VKLA_SUCCESS);
    a.scratch = scr;
    a.scratch_offset = 512;
    vkla_result r = vkla_lion_backward_run(th_ctx(), &a);
    if (r != VKLA_SUCCESS)
        fail_msg("fused views: %s: %s", vkla_result_string(r), vkla_last_error(th_ctx()));
    void *host = malloc(rows * F * es);
    float *all = malloc(rows * F * sizeof(float));
    assert_int_equal(vkla_buffer_download(th_ctx(), fb, 0, host, rows * F * es), VKLA_SUCCESS);
    vkla_convert(all, VKLA_DTYPE_F32, host, c.dt, rows * F);
    float *o1 = malloc(d.nq * sizeof(float)), *o2 = malloc(d.nq * sizeof(float));
    float *o3 = malloc(d.nv * sizeof(float));
    for (size_t rr = 0; rr < rows; rr++) {
        for (uint32_t x = 0; x < K; x++) {
            o1[rr * K + x] = all[rr * F + x];
            o2[rr * K + x] = all[rr * F + K + x];
        }
        for (uint32_t x = 0; x < V; x++)
            o3[rr * V + x] = all[rr * F + 2 * K + x];
    }
    th_assert_close("fused dq", d.dq, o1, d.nq, th_target(d.dq, d.nq, c.dt));
    th_assert_close("fused dk", d.dk, o2, d.nq, th_target(d.dk, d.nq, c.dt));
    th_assert_close("fused dv", d.dv, o3, d.nv, th_target(d.dv, d.nv, c.dt));
    a.scratch_offset = 1024;
    if (need) /* none on the short path */
        assert_int_equal(vkla_lion_backward_run(th_ctx(), &a), VKLA_ERROR_SCRATCH_TOO_SMALL);
    free(host); free(all); free(o1); free(o2); free(o3);
    vkla_buffer_destroy(th_ctx(), fb);
    vkla_buffer_destroy(th_ctx(), scr);
    th_tensor *ts[] = {&q, &k, &v, &dout, &g};
    for (size_t i = 0; i < 5; i++)
        th_tensor_free(ts[i]);
    free_data(&d);
    th_check_validation();
}

/* f16 (packed copies) and f32 (the kernels write the strided views directly) */
static void test_fused_views_scratch(void **state)
{
    (void)state;
    fused_views_scratch(VKLA_DTYPE_F16, 1, G);
    fused_views_scratch(VKLA_DTYPE_F32, 0, G);
    fused_views_scratch(VKLA_DTYPE_F32, 1, G);
    /* LION-LIT on the short-sequence path, which reads and writes the views directly */
    setenv("VKLA_LION_SHORT", "1", 1);
    fused_views_scratch(VKLA_DTYPE_F16, 1, 0);
    fused_views_scratch(VKLA_DTYPE_F32, 0, 0);
    unsetenv("VKLA_LION_SHORT");
}

static void expect(vkla_result got, vkla_result want, const char *what, const char *needle)
{
    const char *msg = vkla_last_error(th_ctx());
    if (got != want)
        fail_msg("%s: got %s, want %s (%s)", what, vkla_result_string(got),
                 vkla_result_string(want), msg);
    if (want != VKLA_SUCCESS && want != VKLA_ERROR_NULL_POINTER && msg[0] == 0)
        fail_msg("%s: no error message", what);
    if (needle && !strstr(msg, needle))
        fail_msg("%s: the message \"%s\" does not name \"%s\"", what, msg, needle);
}

/* (c) error paths */
static void test_errors(void **state)
{
    (void)state;
    const uint32_t B = 1, T = 20, H = 2, K = 16, V = 16;
    uint64_t sq[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[3] = {B, T, H}, sgam[1] = {H};
    uint64_t sbad[4] = {B, T + 1, H, K};
    th_tensor q, k, v, dout, dout16, g, gamma, dq, dk, dv, dg, dgamma, bad;
    double *zeros = calloc((size_t)B * (T + 1) * H * K, sizeof(double));
    th_tensor_new(&q, VKLA_DTYPE_F32, 4, sq, zeros);
    th_tensor_new(&k, VKLA_DTYPE_F32, 4, sq, zeros);
    th_tensor_new(&v, VKLA_DTYPE_F32, 4, sv, zeros);
    th_tensor_new(&dout, VKLA_DTYPE_F32, 4, sv, zeros);
    th_tensor_new(&dout16, VKLA_DTYPE_F16, 4, sv, zeros);
    th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, zeros);
    th_tensor_new(&gamma, VKLA_DTYPE_F32, 1, sgam, zeros);
    th_tensor_new(&dq, VKLA_DTYPE_F32, 4, sq, NULL);
    th_tensor_new(&dk, VKLA_DTYPE_F32, 4, sq, NULL);
    th_tensor_new(&dv, VKLA_DTYPE_F32, 4, sv, NULL);
    th_tensor_new(&dg, VKLA_DTYPE_F32, 3, sg, NULL);
    th_tensor_new(&dgamma, VKLA_DTYPE_F32, 1, sgam, NULL);
    th_tensor_new(&bad, VKLA_DTYPE_F32, 4, sbad, zeros);
    free(zeros);
    vkla_context *ctx = th_ctx();
    vkla_lion_backward_args ok = {0}, a;
    ok.fwd.q = q.t; ok.fwd.k = k.t; ok.fwd.v = v.t; ok.fwd.g = g.t; ok.fwd.g_gamma = gamma.t;
    ok.dout = dout.t;
    ok.dq = dq.t; ok.dk = dk.t; ok.dv = dv.t; ok.dg = dg.t; ok.dg_gamma = dgamma.t;

    expect(vkla_lion_backward_run(ctx, &ok), VKLA_SUCCESS, "valid call", NULL);
    expect(vkla_lion_backward_run(NULL, &ok), VKLA_ERROR_NULL_POINTER, "NULL context", NULL);
    expect(vkla_lion_backward_run(ctx, NULL), VKLA_ERROR_NULL_POINTER, "NULL args", NULL);
    a = ok; a.dout.buffer = NULL;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_NULL_POINTER, "missing dout", "dout");
    a = ok; a.dout = bad.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "dout with another T",
           "dout");
    a = ok; a.dout = dout16.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_DTYPE_MISMATCH, "dout f16, q f32",
           "dout");
    a = ok; a.dq = bad.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "dq with another T", "dq");
    a = ok; a.dv = dq.t; a.dq.buffer = NULL;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_SUCCESS, "dv as [B,T,H,K] with K = V", NULL);
    a = ok; a.dg = gamma.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "dg of rank 1", "dg");
    a = ok; a.dg_gamma = g.t;
    a.dg.buffer = NULL;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "dg_gamma of rank 3",
           "dg_gamma");
    a = ok; a.fwd.g.buffer = NULL;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dg without g", "dg");
    a = ok; a.fwd.g_gamma.buffer = NULL;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT,
           "dg_gamma without g_gamma", "dg_gamma");
    a = ok; a.fwd.k = bad.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "k with another T", "k");
    a = ok; a.fwd.form = VKLA_FORM_RECURRENT;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "recurrent form",
           "form");
    a = ok; a.fwd.chunk_size = 48;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "chunk size 48",
           "chunk");
    /* overlaps: with an input, with dout, with another gradient */
    a = ok; a.dq = q.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dq is q",
           "dq overlaps q");
    a = ok; a.dk = k.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dk is k",
           "dk overlaps k");
    a = ok; a.dv = dout.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dv is dout",
           "dv overlaps dout");
    a = ok; a.dk = dq.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dk is dq",
           "dq overlaps dk");
    a = ok; a.dg = g.t;
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dg is g",
           "dg overlaps g");
    /* a gradient reaching into an input by half a row */
    vkla_buffer *shared;
    assert_int_equal(vkla_buffer_create(ctx, (uint64_t)B * T * H * K * 4 * 2, &shared),
                     VKLA_SUCCESS);
    a = ok;
    a.fwd.q = vkla_tensor_make(shared, 0, VKLA_DTYPE_F32, 4, sq);
    a.dq = vkla_tensor_make(shared, (uint64_t)B * T * H * K * 4 - 32, VKLA_DTYPE_F32, 4, sq);
    expect(vkla_lion_backward_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "dq reaching into q",
           "dq overlaps q");
    vkla_buffer_destroy(ctx, shared);

    /* recording needs a caller scratch */
    uint64_t need = 0;
    expect(vkla_lion_backward_scratch_size(ctx, &ok, &need), VKLA_SUCCESS, "scratch size", NULL);
    assert_true(need > 0);
    expect(vkla_lion_backward_scratch_size(ctx, &ok, NULL), VKLA_ERROR_NULL_POINTER,
           "scratch size NULL", NULL);
    expect(vkla_lion_backward_record(ctx, VK_NULL_HANDLE, &ok), VKLA_ERROR_NULL_POINTER,
           "NULL command buffer", NULL);
    double tb = 0;
    expect(vkla_lion_backward_bench(ctx, &ok, 0, 0, &tb), VKLA_ERROR_INVALID_ARGUMENT,
           "bench with 0 reps", NULL);
    expect(vkla_lion_backward_bench(ctx, &ok, 0, 1, &tb), VKLA_SUCCESS, "bench", NULL);

    th_tensor *all[] = {&q, &k, &v, &dout, &dout16, &g, &gamma, &dq, &dk, &dv, &dg, &dgamma,
                        &bad};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
    th_check_validation();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_fd),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_variants_dtypes),
        cmocka_unit_test(test_lengths_chunks_forms),
        cmocka_unit_test(test_head_dims),
        cmocka_unit_test(test_varlen),
        cmocka_unit_test(test_decay_strength),
        cmocka_unit_test(test_partial_requests),
        cmocka_unit_test(test_gpu_blocks),
        cmocka_unit_test(test_fused_views_scratch),
        cmocka_unit_test(test_short_path),
        cmocka_unit_test(test_long_pieces),
    };
    return cmocka_run_group_tests_name("lion_backward", tests, th_setup, th_teardown);
}
