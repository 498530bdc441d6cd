/* Backward pass of causal linear attention (SPEC sections 1 and 4): the float64 reference
 * gradients against central finite differences of the float64 forward, then every device
 * gradient against the reference over gates x normalize x states x varlen x lengths x chunk
 * sizes x head sizes x dtypes (guard regions on every output), and the error paths. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { G = 1, GAMMA = 2, GK = 4 };

typedef struct bw_case {
    uint32_t B, T, H, K, V;
    int gates;
    int normalize, z0;
    int h0, dht;
    vkla_dtype dt;
    vkla_form form;
    uint32_t chunk;
    const int32_t *cu;
    uint32_t N;
    uint64_t seed;
    double gconst;   /* nonzero: every g / gk entry takes this value */
    int only;        /* nonzero: request only this gradient (1 + index in the list below) */
} bw_case;

/* gradients, in this order: dq dk dv dg dg_gamma dgk dh0 */
enum { D_Q, D_K, D_V, D_G, D_GAMMA, D_GK, D_H0, D_COUNT };
static const char *const dnames[D_COUNT] = {"dq", "dk", "dv", "dg", "dg_gamma", "dgk", "dh0"};

typedef struct bw_data {
    uint32_t N;
    size_t nq, nv, ng, ns, nz;
    double *q, *k, *v, *g, *gamma, *gk, *h0, *z0, *dout, *dht;
    double *grad[D_COUNT];   /* reference gradients (NULL when not computed) */
    size_t gsize[D_COUNT];
} bw_data;

static double *alloc_fill(th_rng *r, size_t n, double lo, double hi, vkla_dtype dt)
{
    double *x = malloc(n * sizeof(double));
    assert_non_null(x);
    th_fill_uniform(r, x, n, lo, hi);
    th_round(x, n, dt);
    return x;
}

static void fwd_args(const bw_case *c, const bw_data *d, vkla_ref_linear_attn_args *ra)
{
    memset(ra, 0, sizeof(*ra));
    ra->B = (int)c->B; ra->T = (int)c->T; ra->H = (int)c->H; ra->K = (int)c->K; ra->V = (int)c->V;
    ra->cu_seqlens = c->cu; ra->N = (int)d->N;
    ra->q = d->q; ra->k = d->k; ra->v = d->v; ra->g = d->g; ra->g_gamma = d->gamma; ra->gk = d->gk;
    ra->h0 = d->h0; ra->z0 = d->z0;
    ra->scale = 1.0 / sqrt((double)c->K);
    ra->normalize = c->normalize; ra->eps = 1e-6;
}

static void make_data(const bw_case *c, bw_data *d)
{
    memset(d, 0, sizeof(*d));
    d->N = c->cu ? c->N : c->B;
    d->nq = (size_t)c->B * c->T * c->H * c->K;
    d->nv = (size_t)c->B * c->T * c->H * c->V;
    d->ng = (size_t)c->B * c->T * c->H;
    d->ns = (size_t)d->N * c->H * c->K * c->V;
    d->nz = (size_t)d->N * c->H * c->K;
    th_rng r;
    th_seed(&r, c->seed ? c->seed : 1);
    if (c->normalize) { /* positive feature maps keep q.z away from 0 */
        d->q = alloc_fill(&r, d->nq, 0.05, 1.0, c->dt);
        d->k = alloc_fill(&r, d->nq, 0.05, 1.0, c->dt);
    } else {
        d->q = alloc_fill(&r, d->nq, -1.0, 1.0, c->dt);
        d->k = malloc(d->nq * sizeof(double));
        th_fill_normal(&r, d->k, d->nq, 1.0);
        th_unit_rows(d->k, d->nq / c->K, c->K);
        th_round(d->k, d->nq, c->dt);
    }
    d->v = alloc_fill(&r, d->nv, -1.0, 1.0, c->dt);
    d->dout = alloc_fill(&r, d->nv, -1.0, 1.0, c->dt);
    if (c->gates & G) {
        d->g = alloc_fill(&r, d->ng, -1.0, 0.0, VKLA_DTYPE_F32);
        for (size_t i = 0; c->gconst != 0 && i < d->ng; i++)
            d->g[i] = c->gconst;
    }
    if (c->gates & GAMMA)
        d->gamma = alloc_fill(&r, c->H, -0.5, -0.01, VKLA_DTYPE_F32);
    if (c->gates & GK) {
        d->gk = alloc_fill(&r, d->nq, -1.0, 0.0, VKLA_DTYPE_F32);
        for (size_t i = 0; c->gconst != 0 && i < d->nq; i++)
            d->gk[i] = c->gconst;
    }
    if (c->h0)
        d->h0 = alloc_fill(&r, d->ns, -0.5, 0.5, VKLA_DTYPE_F32);
    if (c->normalize && c->z0)
        d->z0 = alloc_fill(&r, d->nz, 0.1, 1.0, VKLA_DTYPE_F32);
    if (c->dht)
        d->dht = alloc_fill(&r, d->ns, -1.0, 1.0, VKLA_DTYPE_F32);
    const int has[D_COUNT] = {1, 1, 1, d->g != NULL, d->gamma != NULL, d->gk != NULL,
                              d->h0 != NULL};
    const size_t sizes[D_COUNT] = {d->nq, d->nq, d->nv, d->ng, c->H, d->nq, d->ns};
    for (int i = 0; i < D_COUNT; i++) {
        d->gsize[i] = sizes[i];
        if (has[i] && (!c->only || c->only == i + 1)) {
            d->grad[i] = malloc(sizes[i] * sizeof(double));
            assert_non_null(d->grad[i]);
        }
    }
    vkla_ref_linear_attn_args ra;
    fwd_args(c, d, &ra);
    vkla_ref_linear_attn_backward_args rb = {
        .fwd = &ra, .dout = d->dout, .dht = d->dht, .dq = d->grad[D_Q], .dk = d->grad[D_K],
        .dv = d->grad[D_V], .dg = d->grad[D_G], .dg_gamma = d->grad[D_GAMMA],
        .dgk = d->grad[D_GK], .dh0 = d->grad[D_H0]};
    assert_int_equal(vkla_ref_linear_attn_backward(&rb), 0);
}

static void free_data(bw_data *d)
{
    double *all[] = {d->q, d->k, d->v, d->g, d->gamma, d->gk, d->h0, d->z0, d->dout, d->dht};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]);
    for (int i = 0; i < D_COUNT; i++)
        free(d->grad[i]);
}

/* ---------------------------------------------------------------------------------------------
 * (a) the reference against central finite differences of the float64 forward
 * ------------------------------------------------------------------------------------------- */

static double loss(const bw_case *c, const bw_data *d)
{
    vkla_ref_linear_attn_args ra;
    fwd_args(c, d, &ra);
    double *o = malloc(d->nv * sizeof(double)), *ht = malloc(d->ns * sizeof(double));
    ra.o = o;
    ra.ht = ht;
    assert_int_equal(vkla_ref_linear_attn(&ra), 0);
    double L = 0;
    for (size_t i = 0; i < d->nv; i++)
        L += d->dout[i] * o[i];
    for (size_t i = 0; d->dht && i < d->ns; i++)
        L += d->dht[i] * ht[i];
    free(o);
    free(ht);
    return L;
}

static void fd_case(const char *name, const bw_case *c)
{
    bw_data d;
    make_data(c, &d);
    double *inputs[D_COUNT] = {d.q, d.k, d.v, d.g, d.gamma, d.gk, d.h0};
    for (int i = 0; i < D_COUNT; i++) {
        if (!inputs[i])
            continue;
        double worst = 0, scale = 0;
        for (size_t e = 0; e < d.gsize[i]; e++) {
            double x = inputs[i][e], h = 1e-5 * (fabs(x) > 1 ? fabs(x) : 1);
            inputs[i][e] = x + h;
            double lp = loss(c, &d);
            inputs[i][e] = x - h;
            double lm = loss(c, &d);
            inputs[i][e] = x;
            double fd = (lp - lm) / (2 * h);
            double diff = fabs(fd - d.grad[i][e]);
            if (diff > worst)
                worst = diff;
            if (fabs(d.grad[i][e]) > scale)
                scale = fabs(d.grad[i][e]);
        }
        if (!(worst <= 1e-7 * (scale > 1 ? scale : 1)))
            fail_msg("%s: %s differs from finite differences by %.3e (largest |grad| %.3e)", name,
                     dnames[i], worst, scale);
    }
    free_data(&d);
}

static void test_reference_fd(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 2, 2, 5, 6};
    const bw_case cases[] = {
        {.B = 2, .T = 5, .H = 2, .K = 3, .V = 4, .seed = 1},
        {.B = 2, .T = 5, .H = 2, .K = 3, .V = 4, .gates = G, .h0 = 1, .dht = 1, .seed = 2},
        {.B = 1, .T = 6, .H = 2, .K = 3, .V = 2, .gates = GAMMA | GK, .seed = 3},
        {.B = 2, .T = 5, .H = 1, .K = 4, .V = 3, .gates = G | GAMMA | GK, .h0 = 1, .dht = 1,
         .seed = 4},
        {.B = 2, .T = 5, .H = 2, .K = 3, .V = 4, .gates = G | GK, .normalize = 1, .z0 = 1,
         .h0 = 1, .dht = 1, .seed = 5},
        {.B = 1, .T = 4, .H = 1, .K = 2, .V = 3, .normalize = 1, .seed = 6},
        {.B = 1, .T = 6, .H = 2, .K = 3, .V = 2, .gates = G | GAMMA | GK, .h0 = 1, .dht = 1,
         .cu = cu, .N = 4, .seed = 7},
        {.B = 1, .T = 6, .H = 1, .K = 2, .V = 3, .gates = G, .normalize = 1, .z0 = 1, .h0 = 1,
         .dht = 1, .cu = cu, .N = 4, .seed = 8},
        {.B = 1, .T = 5, .H = 1, .K = 3, .V = 2, .gates = G | GK, .gconst = 0.05, .h0 = 1,
         .dht = 1, .seed = 9},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "fd case %zu", i);
        fd_case(name, &cases[i]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * (b) the device against the reference
 * ------------------------------------------------------------------------------------------- */

typedef struct bw_dev {
    th_tensor q, k, v, g, gamma, gk, h0, z0, dout, dht;
    th_tensor grad[D_COUNT];
    vkla_linear_attn_backward_args a;
} bw_dev;

static void dev_setup(const bw_case *c, const bw_data *d, bw_dev *x)
{
    memset(x, 0, sizeof(*x));
    uint64_t sq[4] = {c->B, c->T, c->H, c->K}, sv[4] = {c->B, c->T, c->H, c->V};
    uint64_t sg[3] = {c->B, c->T, c->H}, sgam[1] = {c->H};
    uint64_t ss[4] = {d->N, c->H, c->K, c->V}, sz[3] = {d->N, c->H, c->K};
    vkla_linear_attn_args *f = &x->a.fwd;
    th_tensor_new(&x->q, c->dt, 4, sq, d->q);
    th_tensor_new(&x->k, c->dt, 4, sq, d->k);
    th_tensor_new(&x->v, c->dt, 4, sv, d->v);
    th_tensor_new(&x->dout, c->dt, 4, sv, d->dout);
    f->form = c->form;
    f->q = x->q.t; f->k = x->k.t; f->v = x->v.t;
    x->a.dout = x->dout.t;
    if (d->g) { th_tensor_new(&x->g, VKLA_DTYPE_F32, 3, sg, d->g); f->g = x->g.t; }
    if (d->gamma) { th_tensor_new(&x->gamma, VKLA_DTYPE_F32, 1, sgam, d->gamma); f->g_gamma = x->gamma.t; }
    if (d->gk) { th_tensor_new(&x->gk, VKLA_DTYPE_F32, 4, sq, d->gk); f->gk = x->gk.t; }
    if (d->h0) { th_tensor_new(&x->h0, VKLA_DTYPE_F32, 4, ss, d->h0); f->h0 = x->h0.t; }
    if (d->z0) { th_tensor_new(&x->z0, VKLA_DTYPE_F32, 3, sz, d->z0); f->z0 = x->z0.t; }
    if (d->dht) { th_tensor_new(&x->dht, VKLA_DTYPE_F32, 4, ss, d->dht); x->a.dht = x->dht.t; }
    f->cu_seqlens = c->cu;
    f->num_seqs = c->cu ? c->N : 0;
    f->normalize = c->normalize;
    f->chunk_size = c->chunk;
    const uint64_t *shapes[D_COUNT] = {sq, sq, sv, sg, sgam, sq, ss};
    const uint32_t ndims[D_COUNT] = {4, 4, 4, 3, 1, 4, 4};
    vkla_tensor *dst[D_COUNT] = {&x->a.dq, &x->a.dk, &x->a.dv, &x->a.dg, &x->a.dg_gamma,
                                 &x->a.dgk, &x->a.dh0};
    for (int i = 0; i < D_COUNT; i++) {
        if (!d->grad[i])
            continue;
        th_tensor_new(&x->grad[i], i < D_G ? c->dt : VKLA_DTYPE_F32, ndims[i], shapes[i], NULL);
        *dst[i] = x->grad[i].t;
    }
}

static void dev_free(bw_dev *x)
{
    th_tensor *all[] = {&x->q, &x->k, &x->v, &x->g, &x->gamma, &x->gk, &x->h0, &x->z0,
                        &x->dout, &x->dht};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
    for (int i = 0; i < D_COUNT; i++)
        th_tensor_free(&x->grad[i]);
}

static double g_worst[3][D_COUNT]; /* largest NMSE seen per dtype and gradient */

static void run_case(const char *name, const bw_case *c)
{
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bw_data d;
    make_data(c, &d);
    bw_dev x;
    dev_setup(c, &d, &x);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    vkla_result r = vkla_linear_attn_backward_run(th_ctx(), &x.a);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (getenv("TH_TIME"))
        fprintf(stderr, "%-70s ref %7.1f ms  device %7.1f ms\n", name,
                (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6,
                (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: %s: %s", name, vkla_result_string(r), vkla_last_error(th_ctx()));
    for (int i = 0; i < D_COUNT; i++) {
        if (!d.grad[i])
            continue;
        float *out = malloc(d.gsize[i] * sizeof(float));
        th_tensor_read(&x.grad[i], out);
        /* dq dk dv are stored in the dtype: at most 10x the error of rounding the reference
         * once; the f32 gradients come from the same rounded inputs as the reference, so they
         * get the f32 target. dg_gamma alone is relaxed to 1e-8: it is the sum of dg over all
         * tokens, whose terms cancel to a total much smaller than the terms, so the f32 error
         * of each term (dg itself meets 1e-9 with room) is amplified by that cancellation
         * (measured up to ~1e-9, 25x dg's NMSE in the same case). */
        double target = i < D_G ? th_target(d.grad[i], d.gsize[i], c->dt)
                        : i == D_GAMMA ? 1e-8 : 1e-9;
        double e = vkla_ref_nmse(d.grad[i], out, d.gsize[i]);
        if (e > g_worst[c->dt][i])
            g_worst[c->dt][i] = e;
        if (getenv("TH_TIME"))
            fprintf(stderr, "    %s NMSE %.2e\n", dnames[i], e);
        char what[160];
        snprintf(what, sizeof(what), "%s: %s", name, dnames[i]);
        th_assert_close(what, d.grad[i], out, d.gsize[i], target);
        free(out);
    }
    dev_free(&x);
    free_data(&d);
    th_check_validation();
}

static void case_name(char *buf, size_t n, const char *what, const bw_case *c)
{
    snprintf(buf, n, "%s T=%u K=%u V=%u C=%u gates=%d norm=%d z0=%d h0=%d dht=%d %s%s", what, c->T,
             c->K, c->V, c->chunk ? c->chunk : 64, c->gates, c->normalize, c->z0, c->h0, c->dht,
             vkla_dtype_name(c->dt), c->cu ? " varlen" : "");
}

/* every subset of the three gates, with and without states */
static void test_gate_subsets(void **state)
{
    (void)state;
    for (int gates = 0; gates < 8; gates++)
        for (int st = 0; st < 2; st++) {
            bw_case c = {.B = 2, .T = 40, .H = 2, .K = 24, .V = 20, .gates = gates, .h0 = st,
                         .dht = st, .chunk = 16, .dt = VKLA_DTYPE_F32,
                         .seed = (uint64_t)(10 + gates * 2 + st)};
            char name[160];
            case_name(name, sizeof(name), "gates", &c);
            run_case(name, &c);
        }
}

/* T in {1, 63, 65, 100} with chunks 16, 32, 64 */
static void test_lengths_chunks(void **state)
{
    (void)state;
    const uint32_t Ts[] = {1, 63, 65, 100};
    const uint32_t cs[] = {16, 32, 64};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            bw_case c = {.B = 1, .T = Ts[i], .H = 2, .K = 16, .V = 16,
                         .gates = (i + j) % 2 ? G | GK : G | GAMMA, .h0 = 1, .dht = 1,
                         .chunk = cs[j], .dt = VKLA_DTYPE_F32, .seed = (uint64_t)(40 + i * 3 + j)};
            char name[160];
            case_name(name, sizeof(name), "length", &c);
            run_case(name, &c);
        }
}

/* odd and large head sizes */
static void test_head_dims(void **state)
{
    (void)state;
    const uint32_t kv[][2] = {{1, 1}, {1, 7}, {7, 33}, {33, 7}, {17, 65}, {128, 128}, {256, 256}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        int big = kv[i][0] >= 128;
        bw_case c = {.B = 1, .T = big ? 33 : 45, .H = big ? 1 : 2, .K = kv[i][0], .V = kv[i][1],
                     .gates = G | GAMMA | GK, .h0 = 1, .dht = 1, .chunk = big ? 16 : 32,
                     .dt = VKLA_DTYPE_F32, .seed = 60 + i};
        char name[160];
        case_name(name, sizeof(name), "head dims", &c);
        run_case(name, &c);
    }
}

/* f16 and bf16 storage */
static void test_dtypes(void **state)
{
    (void)state;
    const int gates[] = {0, G, GK, G | GAMMA | GK};
    for (int di = 1; di < 3; di++)
        for (int gi = 0; gi < 4; gi++) {
            bw_case c = {.B = 2, .T = 50, .H = 2, .K = 32, .V = 24, .gates = gates[gi], .h0 = 1,
                         .dht = 1, .chunk = gi % 2 ? 32 : 16, .dt = (vkla_dtype)di,
                         .seed = (uint64_t)(80 + di * 5 + gi)};
            char name[160];
            case_name(name, sizeof(name), "dtype", &c);
            run_case(name, &c);
        }
}

/* normalize, with and without z0, with and without states and gates */
static void test_normalize(void **state)
{
    (void)state;
    const int gates[] = {0, G | GAMMA, GK, G | GAMMA | GK};
    for (int gi = 0; gi < 4; gi++)
        for (int z = 0; z < 2; z++) {
            bw_case c = {.B = 2, .T = 45, .H = 2, .K = 12, .V = 20, .gates = gates[gi],
                         .normalize = 1, .z0 = z, .h0 = z || gi == 1, .dht = gi % 2, .chunk = 16,
                         .dt = gi == 3 && z ? VKLA_DTYPE_F16 : VKLA_DTYPE_F32,
                         .seed = (uint64_t)(100 + gi * 2 + z)};
            char name[160];
            case_name(name, sizeof(name), "normalize", &c);
            run_case(name, &c);
        }
}

/* packed sequences of lengths {1, 63, 65, 17}, and one with an empty sequence */
static void test_varlen(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 1, 64, 129, 146};
    static const int32_t cu_empty[] = {0, 20, 20, 37};
    const int gates[] = {G, GK | GAMMA, G | GAMMA | GK, 0};
    for (int gi = 0; gi < 4; gi++)
        for (int j = 0; j < 2; j++) {
            bw_case c = {.B = 1, .T = 146, .H = 2, .K = 16, .V = 12, .gates = gates[gi],
                         .h0 = 1, .dht = 1, .normalize = gi == 3, .z0 = gi == 3,
                         .chunk = j ? 64 : 16, .dt = j && gi == 1 ? VKLA_DTYPE_BF16 : VKLA_DTYPE_F32,
                         .cu = cu, .N = 4, .seed = (uint64_t)(120 + gi * 2 + j)};
            char name[160];
            case_name(name, sizeof(name), "varlen", &c);
            run_case(name, &c);
        }
    bw_case c = {.B = 1, .T = 37, .H = 1, .K = 8, .V = 8, .gates = G | GK, .h0 = 1, .dht = 1,
                 .chunk = 16, .dt = VKLA_DTYPE_F32, .cu = cu_empty, .N = 3, .seed = 140};
    run_case("varlen with an empty sequence", &c);
}

/* each gradient alone; the recurrent form's args; positive log decays */
static void test_subsets_forms(void **state)
{
    (void)state;
    for (int only = 1; only <= D_COUNT; only++) {
        bw_case c = {.B = 1, .T = 37, .H = 2, .K = 8, .V = 12, .gates = G | GAMMA | GK, .h0 = 1,
                     .dht = only % 2, .chunk = 16, .dt = VKLA_DTYPE_F32, .only = only,
                     .seed = (uint64_t)(150 + only)};
        char name[64];
        snprintf(name, sizeof(name), "only %s", dnames[only - 1]);
        run_case(name, &c);
    }
    bw_case c = {.B = 2, .T = 30, .H = 2, .K = 8, .V = 8, .gates = G, .h0 = 1, .dht = 1,
                 .form = VKLA_FORM_RECURRENT, .dt = VKLA_DTYPE_F32, .seed = 160};
    run_case("recurrent form args", &c);
    const int gates[] = {G, GK, G | GK};
    for (int gi = 0; gi < 3; gi++) {
        bw_case p = {.B = 1, .T = 50, .H = 2, .K = 16, .V = 16, .gates = gates[gi], .h0 = 1,
                     .dht = 1, .chunk = 16, .gconst = 0.05, .dt = VKLA_DTYPE_F32,
                     .seed = (uint64_t)(170 + gi)};
        char name[64];
        snprintf(name, sizeof(name), "positive gates %d", gates[gi]);
        run_case(name, &p);
    }
}

/* q, k, v and dq, dk, dv as views into fused [B,T,H,3K] buffers */
static void test_fused_views(void **state)
{
    (void)state;
    const uint32_t B = 2, T = 33, H = 2, K = 8;
    bw_case c = {.B = B, .T = T, .H = H, .K = K, .V = K, .gates = G, .h0 = 1, .dht = 1,
                 .chunk = 16, .dt = VKLA_DTYPE_F32, .seed = 180};
    bw_data d;
    make_data(&c, &d);
    bw_dev x;
    dev_setup(&c, &d, &x);
    size_t n = d.nq;
    double *fused = malloc(3 * n * sizeof(double));
    for (size_t r = 0; r < n / K; r++)
        for (uint32_t i = 0; i < K; i++) {
            fused[r * 3 * K + i] = d.q[r * K + i];
            fused[r * 3 * K + K + i] = d.k[r * K + i];
            fused[r * 3 * K + 2 * K + i] = d.v[r * K + i];
        }
    uint64_t sf[4] = {B, T, H, 3 * K};
    th_tensor in, out;
    th_tensor_new(&in, VKLA_DTYPE_F32, 4, sf, fused);
    th_tensor_new(&out, VKLA_DTYPE_F32, 4, sf, NULL);
    vkla_tensor *views[6] = {&x.a.fwd.q, &x.a.fwd.k, &x.a.fwd.v, &x.a.dq, &x.a.dk, &x.a.dv};
    for (int i = 0; i < 6; i++) {
        th_tensor *src = i < 3 ? &in : &out;
        uint64_t s4[4] = {B, T, H, K};
        *views[i] = vkla_tensor_make(src->buf, TH_GUARD + (uint64_t)(i % 3) * K * 4,
                                     VKLA_DTYPE_F32, 4, s4);
        views[i]->strides[0] = (uint64_t)T * H * 3 * K;
        views[i]->strides[1] = (uint64_t)H * 3 * K;
        views[i]->strides[2] = 3 * K;
    }
    vkla_result r = vkla_linear_attn_backward_run(th_ctx(), &x.a);
    if (r != VKLA_SUCCESS)
        fail_msg("fused views: %s", vkla_last_error(th_ctx()));
    float *o = malloc(3 * n * sizeof(float)), *part = malloc(n * sizeof(float));
    th_tensor_read(&out, o);
    for (int i = 0; i < 3; i++) {
        for (size_t rr = 0; rr < n / K; rr++)
            for (uint32_t j = 0; j < K; j++)
                part[rr * K + j] = o[rr * 3 * K + (uint32_t)i * K + j];
        th_assert_close(dnames[i], d.grad[i], part, n, 1e-9);
    }
    free(o);
    free(part);
    free(fused);
    th_tensor_free(&in);
    th_tensor_free(&out);
    dev_free(&x);
    free_data(&d);
    th_check_validation();
}

/* ---------------------------------------------------------------------------------------------
 * (c) error paths
 * ------------------------------------------------------------------------------------------- */

static void expect_error(const char *what, const vkla_linear_attn_backward_args *a,
                         vkla_result want, const char *needle)
{
    vkla_result r = vkla_linear_attn_backward_run(th_ctx(), a);
    const char *msg = vkla_last_error(th_ctx());
    if (r != want)
        fail_msg("%s: got %s (%s), expected %s", what, vkla_result_string(r), msg,
                 vkla_result_string(want));
    if (needle && !strstr(msg, needle))
        fail_msg("%s: message \"%s\" does not name \"%s\"", what, msg, needle);
    uint64_t bytes;
    if (vkla_linear_attn_backward_scratch_size(th_ctx(), a, &bytes) != want)
        fail_msg("%s: the size query does not fail the same way", what);
}

static void test_errors(void **state)
{
    (void)state;
    bw_case c = {.B = 1, .T = 20, .H = 2, .K = 8, .V = 8, .gates = G, .h0 = 1, .dht = 1,
                 .chunk = 16, .dt = VKLA_DTYPE_F32, .seed = 200};
    bw_data d;
    make_data(&c, &d);
    bw_dev x;
    dev_setup(&c, &d, &x);
    vkla_linear_attn_backward_args a;

    a = x.a;
    memset(&a.dout, 0, sizeof(a.dout));
    expect_error("missing dout", &a, VKLA_ERROR_NULL_POINTER, "dout");

    a = x.a;
    a.dout.shape[3] = 4;
    expect_error("dout shape", &a, VKLA_ERROR_SHAPE_MISMATCH, "dout");

    a = x.a;
    a.dout.dtype = VKLA_DTYPE_F16;
    expect_error("dout dtype", &a, VKLA_ERROR_DTYPE_MISMATCH, "dout");

    a = x.a;
    a.dq.shape[2] = 3;
    expect_error("dq shape", &a, VKLA_ERROR_SHAPE_MISMATCH, "dq");

    a = x.a;
    a.dht.shape[0] = 2;
    expect_error("dht shape", &a, VKLA_ERROR_SHAPE_MISMATCH, "dht");

    a = x.a;
    a.dgk = x.a.dq;   /* a gradient of an input that was not given */
    expect_error("dgk without gk", &a, VKLA_ERROR_INVALID_ARGUMENT, "gk");

    a = x.a;
    a.dh0 = x.a.dq;
    memset(&a.fwd.h0, 0, sizeof(a.fwd.h0));
    expect_error("dh0 without h0", &a, VKLA_ERROR_INVALID_ARGUMENT, "h0");

    a = x.a;
    a.dq = x.a.fwd.q;  /* gradient overlapping an input */
    expect_error("dq overlaps q", &a, VKLA_ERROR_INVALID_ARGUMENT, "dq");

    a = x.a;
    a.dv = x.a.dout;
    expect_error("dv overlaps dout", &a, VKLA_ERROR_INVALID_ARGUMENT, "dout");

    a = x.a;
    a.dk = x.a.dq;     /* two gradients in one place */
    expect_error("dk overlaps dq", &a, VKLA_ERROR_INVALID_ARGUMENT, "dk");

    a = x.a;
    a.dh0 = x.a.dht;
    expect_error("dh0 overlaps dht", &a, VKLA_ERROR_INVALID_ARGUMENT, "dht");

    a = x.a;
    a.fwd.form = VKLA_FORM_ATTN;
    expect_error("attn form", &a, VKLA_ERROR_INVALID_ARGUMENT, "form");

    a = x.a;
    a.fwd.chunk_size = 48;
    expect_error("chunk size", &a, VKLA_ERROR_INVALID_ARGUMENT, "chunk_size");

    a = x.a;
    a.dg.shape[1] = 5;
    expect_error("dg shape", &a, VKLA_ERROR_SHAPE_MISMATCH, "dg");

    /* the forward's outputs are not needed */
    a = x.a;
    assert_int_equal(vkla_linear_attn_backward_run(th_ctx(), &a), VKLA_SUCCESS);
    assert_int_equal(vkla_linear_attn_backward_run(th_ctx(), NULL), VKLA_ERROR_NULL_POINTER);
    dev_free(&x);
    free_data(&d);
    th_check_validation();
}

static int report(void **state)
{
    for (int dt = 0; dt < 3; dt++) {
        fprintf(stderr, "largest NMSE %s:", vkla_dtype_name((vkla_dtype)dt));
        for (int i = 0; i < D_COUNT; i++)
            fprintf(stderr, " %s %.2e", dnames[i], g_worst[dt][i]);
        fprintf(stderr, "\n");
    }
    return th_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_fd),
        cmocka_unit_test(test_gate_subsets),
        cmocka_unit_test(test_lengths_chunks),
        cmocka_unit_test(test_head_dims),
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_varlen),
        cmocka_unit_test(test_subsets_forms),
        cmocka_unit_test(test_fused_views),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("linear_attn_backward", tests, th_setup, report);
}
