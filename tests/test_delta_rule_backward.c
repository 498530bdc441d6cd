/* Delta rule backward (SPEC sections 2 and 4): the float64 reference against central finite
 * differences of the float64 forward, then the device against the reference for every gradient
 * and option (gate, l2norm, grouped value heads, h0, dht, varlen, chunk sizes, dtypes, head
 * dims, lengths), the numerically hard inputs, and the error paths.
 *
 * Compiling pipelines is the slow part on CPU drivers (one per kernel and shape), so most cases
 * share one shape (K = 33, V = 7, H = 2, HV = 4) unless the shape is the point of the case. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BK 33u
#define BV 7u

typedef struct bw_case {
    uint32_t B, T, H, HV, K, V;
    int gate, l2norm, h0, dht;
    vkla_dtype dt;
    uint32_t chunk;
    const int32_t *cu;
    uint32_t N;
    uint64_t seed;
    double gmin, gmax;   /* log gate range (default [-1, 0)) */
    int gzero;           /* log gates all 0 */
    double bmin, bmax;   /* beta range (default [0.1, 0.9)) */
    double kspread;      /* with l2norm: key norms 10^[-kspread, kspread] (0: normal keys) */
    unsigned skip;       /* gradients not requested: bits of G_* */
    double target;       /* NMSE target of the f32 gradients (0 = th_target) */
} bw_case;

enum { G_Q, G_K, G_V, G_BETA, G_G, G_H0, G_COUNT };
static const char *const gname[G_COUNT] = {"dq", "dk", "dv", "dbeta", "dg", "dh0"};

typedef struct bw_data {
    size_t n[G_COUNT];           /* elements of each input (and its gradient) */
    size_t nv, ns;
    double *in[G_COUNT];         /* q k v beta g h0 (g, h0 NULL when absent) */
    double *dout, *dht;
    double *grad[G_COUNT];       /* reference gradients */
} bw_data;

static uint32_t n_seqs(const bw_case *c) { return c->cu ? c->N : c->B; }

static double *alloc(size_t n) { return calloc(n + 1, sizeof(double)); }

static void make_inputs(const bw_case *c, bw_data *d)
{
    memset(d, 0, sizeof(*d));
    size_t nq = (size_t)c->B * c->T * c->H * c->K, nb = (size_t)c->B * c->T * c->HV;
    d->nv = (size_t)c->B * c->T * c->HV * c->V;
    d->ns = (size_t)n_seqs(c) * c->HV * c->K * c->V;
    size_t n[G_COUNT] = {nq, nq, d->nv, nb, nb, d->ns};
    memcpy(d->n, n, sizeof(n));
    th_rng r;
    th_seed(&r, c->seed ? c->seed : 7);
    for (int i = 0; i < G_COUNT; i++)
        d->in[i] = alloc(n[i]);
    th_fill_normal(&r, d->in[G_Q], nq, 1.0);
    th_fill_normal(&r, d->in[G_K], nq, 1.0);
    if (!c->l2norm || c->kspread == 0)
        th_unit_rows(d->in[G_K], nq / c->K, c->K);
    if (c->l2norm && c->kspread != 0) { /* rows of norm 10^u, u uniform in [-spread, spread] */
        th_unit_rows(d->in[G_K], nq / c->K, c->K);
        for (size_t i = 0; i < nq / c->K; i++) {
            double s = pow(10.0, th_uniform(&r, -c->kspread, c->kspread));
            for (size_t x = 0; x < c->K; x++)
                d->in[G_K][i * c->K + x] *= s;
        }
    }
    th_fill_normal(&r, d->in[G_V], d->nv, 1.0);
    double bmin = c->bmax != 0 ? c->bmin : 0.1, bmax = c->bmax != 0 ? c->bmax : 0.9;
    th_fill_uniform(&r, d->in[G_BETA], nb, bmin, bmax);
    double gmin = c->gmin != 0 || c->gmax != 0 ? c->gmin : -1.0;
    double gmax = c->gmin != 0 || c->gmax != 0 ? c->gmax : 0.0;
    th_fill_uniform(&r, d->in[G_G], nb, gmin, gmax);
    if (c->gzero)
        memset(d->in[G_G], 0, nb * sizeof(double));
    th_fill_normal(&r, d->in[G_H0], d->ns, 0.5);
    d->dout = alloc(d->nv);
    d->dht = alloc(d->ns);
    th_fill_normal(&r, d->dout, d->nv, 1.0);
    th_fill_normal(&r, d->dht, d->ns, 0.5);
    for (int i = 0; i < 3; i++)
        th_round(d->in[i], n[i], c->dt);
    th_round(d->dout, d->nv, c->dt);
    for (int i = 3; i < G_COUNT; i++)
        th_round(d->in[i], n[i], VKLA_DTYPE_F32);
    th_round(d->dht, d->ns, VKLA_DTYPE_F32);
    if (!c->gate) {
        free(d->in[G_G]);
        d->in[G_G] = NULL;
    }
    if (!c->h0) {
        free(d->in[G_H0]);
        d->in[G_H0] = NULL;
    }
    if (!c->dht) {
        free(d->dht);
        d->dht = NULL;
    }
}

static void free_data(bw_data *d)
{
    for (int i = 0; i < G_COUNT; i++) {
        free(d->in[i]);
        free(d->grad[i]);
    }
    free(d->dout);
    free(d->dht);
}

static vkla_ref_delta_rule_args ref_fwd(const bw_case *c, const bw_data *d)
{
    vkla_ref_delta_rule_args ra = {
        .B = (int)c->B, .T = (int)c->T, .H = (int)c->H, .HV = (int)c->HV, .K = (int)c->K,
        .V = (int)c->V, .cu_seqlens = c->cu, .N = (int)n_seqs(c), .q = d->in[G_Q],
        .k = d->in[G_K], .v = d->in[G_V], .beta = d->in[G_BETA], .g = d->in[G_G],
        .h0 = d->in[G_H0], .scale = 1.0 / sqrt((double)c->K), .l2norm = c->l2norm};
    return ra;
}

static void reference_grads(const bw_case *c, bw_data *d)
{
    vkla_ref_delta_rule_args ra = ref_fwd(c, d);
    for (int i = 0; i < G_COUNT; i++)
        d->grad[i] = d->in[i] ? alloc(d->n[i]) : NULL;
    vkla_ref_delta_rule_backward_args rb = {
        .fwd = &ra, .dout = d->dout, .dht = d->dht, .dq = d->grad[G_Q], .dk = d->grad[G_K],
        .dv = d->grad[G_V], .dbeta = d->grad[G_BETA], .dg = d->grad[G_G], .dh0 = d->grad[G_H0]};
    assert_int_equal(vkla_ref_delta_rule_backward(&rb), 0);
}

/* ------------------------------------------------------------------------------------------ */
/* (a) the reference against central finite differences                                       */
/* ------------------------------------------------------------------------------------------ */

static double loss(const bw_case *c, const bw_data *d)
{
    vkla_ref_delta_rule_args ra = ref_fwd(c, d);
    double *o = alloc(d->nv), *ht = alloc(d->ns);
    ra.o = o;
    ra.ht = ht;
    assert_int_equal(vkla_ref_delta_rule(&ra), 0);
    double l = 0;
    for (size_t i = 0; i < d->nv; i++)
        l += d->dout[i] * o[i];
    if (d->dht)
        for (size_t i = 0; i < d->ns; i++)
            l += d->dht[i] * ht[i];
    free(o);
    free(ht);
    return l;
}

static void fd_case(const char *name, const bw_case *c)
{
    bw_data d;
    make_inputs(c, &d);
    reference_grads(c, &d);
    const double h = 1e-6;
    for (int g = 0; g < G_COUNT; g++) {
        if (!d.in[g])
            continue;
        double num = 0, den = 0;
        for (size_t i = 0; i < d.n[g]; i++) {
            double x = d.in[g][i];
            d.in[g][i] = x + h;
            double lp = loss(c, &d);
            d.in[g][i] = x - h;
            double lm = loss(c, &d);
            d.in[g][i] = x;
            double fd = (lp - lm) / (2 * h);
            num += (fd - d.grad[g][i]) * (fd - d.grad[g][i]);
            den += fd * fd;
        }
        double e = den > 0 ? num / den : num;
        if (getenv("TH_NMSE"))
            fprintf(stderr, "fd %-36s %-5s NMSE %.2e\n", name, gname[g], e);
        if (!(e <= 1e-12))
            fail_msg("%s: %s: reference vs finite differences NMSE %.3e", name, gname[g], e);
    }
    free_data(&d);
}

static void test_reference_fd(void **state)
{
    (void)state;
    static const int32_t cu[4] = {0, 3, 3, 8};
    bw_case base = {.B = 2, .T = 6, .H = 1, .HV = 1, .K = 3, .V = 2, .dt = VKLA_DTYPE_F32};
    bw_case c = base;
    fd_case("plain", &c);
    c.gate = 1;
    fd_case("g", &c);
    c = base;
    c.l2norm = 1;
    c.kspread = 1;
    fd_case("l2norm", &c);
    c = base;
    c.H = 2;
    c.HV = 4;
    c.gate = 1;
    fd_case("grouped heads", &c);
    c = base;
    c.h0 = c.dht = 1;
    c.gate = 1;
    c.bmin = 1.2;
    c.bmax = 1.9;
    fd_case("h0 dht beta > 1", &c);
    c = base;
    c.B = 1;
    c.T = 8;
    c.cu = cu;
    c.N = 3;
    c.h0 = c.dht = c.gate = c.l2norm = 1;
    c.H = 1;
    c.HV = 2;
    fd_case("varlen all options", &c);
}

/* ------------------------------------------------------------------------------------------ */
/* (b), (c) the device against the reference                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct bw_dev {
    th_tensor in[G_COUNT], dout, dht, grad[G_COUNT];
} bw_dev;

static vkla_dtype in_dtype(const bw_case *c, int g) { return g < 3 ? c->dt : VKLA_DTYPE_F32; }

static void in_shape(const bw_case *c, int g, uint32_t *ndim, uint64_t *s)
{
    uint64_t sq[4] = {c->B, c->T, c->H, c->K}, sv[4] = {c->B, c->T, c->HV, c->V};
    uint64_t sb[3] = {c->B, c->T, c->HV}, ss[4] = {n_seqs(c), c->HV, c->K, c->V};
    const uint64_t *src = g < 2 ? sq : g == G_V ? sv : g == G_H0 ? ss : sb;
    *ndim = g == G_BETA || g == G_G ? 3 : 4;
    memcpy(s, src, *ndim * sizeof(uint64_t));
}

static void dev_make(const bw_case *c, const bw_data *d, bw_dev *x,
                     vkla_delta_rule_backward_args *a)
{
    memset(x, 0, sizeof(*x));
    memset(a, 0, sizeof(*a));
    vkla_tensor *fin[G_COUNT] = {&a->fwd.q, &a->fwd.k, &a->fwd.v, &a->fwd.beta, &a->fwd.g,
                                 &a->fwd.h0};
    vkla_tensor *fgr[G_COUNT] = {&a->dq, &a->dk, &a->dv, &a->dbeta, &a->dg, &a->dh0};
    for (int g = 0; g < G_COUNT; g++) {
        if (!d->in[g])
            continue;
        uint32_t nd;
        uint64_t s[4];
        in_shape(c, g, &nd, s);
        th_tensor_new(&x->in[g], in_dtype(c, g), nd, s, d->in[g]);
        *fin[g] = x->in[g].t;
        if (!(c->skip & (1u << g))) {
            th_tensor_new(&x->grad[g], in_dtype(c, g), nd, s, NULL);
            *fgr[g] = x->grad[g].t;
        }
    }
    uint64_t sv[4] = {c->B, c->T, c->HV, c->V}, ss[4] = {n_seqs(c), c->HV, c->K, c->V};
    th_tensor_new(&x->dout, c->dt, 4, sv, d->dout);
    a->dout = x->dout.t;
    if (d->dht) {
        th_tensor_new(&x->dht, VKLA_DTYPE_F32, 4, ss, d->dht);
        a->dht = x->dht.t;
    }
    a->fwd.cu_seqlens = c->cu;
    a->fwd.num_seqs = c->cu ? c->N : 0;
    a->fwd.l2norm = c->l2norm;
    a->fwd.chunk_size = c->chunk;
}

static void dev_free(bw_dev *x)
{
    for (int g = 0; g < G_COUNT; g++) {
        th_tensor_free(&x->in[g]);
        th_tensor_free(&x->grad[g]);
    }
    th_tensor_free(&x->dout);
    th_tensor_free(&x->dht);
}

static void check_grads(const char *name, const bw_case *c, const bw_data *d, bw_dev *x)
{
    for (int g = 0; g < G_COUNT; g++) {
        if (!d->in[g] || (c->skip & (1u << g)))
            continue;
        float *out = malloc(d->n[g] * sizeof(float) + 4);
        th_tensor_read(&x->grad[g], out);
        vkla_dtype dt = in_dtype(c, g);
        double target = th_target(d->grad[g], d->n[g], dt);
        if (dt == VKLA_DTYPE_F32 && c->target != 0)
            target = c->target;
        char what[160];
        snprintf(what, sizeof(what), "%s: %s", name, gname[g]);
        if (getenv("TH_NMSE"))
            fprintf(stderr, "%-44s %-5s NMSE %.2e (target %.1e)\n", name, gname[g],
                    vkla_ref_nmse(d->grad[g], out, d->n[g]), target);
        th_assert_close(what, d->grad[g], out, d->n[g], target);
        free(out);
    }
}

static void run_case(const char *name, const bw_case *c)
{
    bw_data d;
    make_inputs(c, &d);
    reference_grads(c, &d);
    bw_dev x;
    vkla_delta_rule_backward_args a;
    dev_make(c, &d, &x, &a);
    vkla_result r = vkla_delta_rule_backward_run(th_ctx(), &a);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: %s: %s", name, vkla_result_string(r), vkla_last_error(th_ctx()));
    check_grads(name, c, &d, &x);
    dev_free(&x);
    free_data(&d);
    th_check_validation();
}

static bw_case base_case(void)
{
    bw_case c = {.B = 2, .T = 65, .H = 2, .HV = 4, .K = BK, .V = BV, .dt = VKLA_DTYPE_F32};
    return c;
}

/* every option combination in f32, and every dtype */
static void test_options_dtypes(void **state)
{
    (void)state;
    static const vkla_dtype dts[3] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    for (int dt = 0; dt < 3; dt++)
        for (int m = 0; m < 8; m++) {
            if (dt && m != 0 && m != 7)
                continue;
            bw_case c = base_case();
            c.dt = dts[dt];
            c.gate = m & 1;
            c.l2norm = (m >> 1) & 1;
            c.h0 = c.dht = (m >> 2) & 1;
            c.seed = 11 + (uint64_t)m;
            if (c.l2norm)
                c.kspread = 0.5;
            char name[96];
            snprintf(name, sizeof(name), "%s gate=%d l2norm=%d h0/dht=%d", vkla_dtype_name(c.dt),
                     c.gate, c.l2norm, c.h0);
            run_case(name, &c);
        }
}

static void test_lengths_chunks(void **state)
{
    (void)state;
    static const uint32_t Ts[4] = {1, 63, 65, 100};
    static const uint32_t Cs[3] = {16, 32, 64};
    for (int ci = 0; ci < 3; ci++)
        for (int ti = 0; ti < 4; ti++) {
            bw_case c = base_case();
            c.T = Ts[ti];
            c.chunk = Cs[ci];
            c.gate = c.h0 = c.dht = 1;
            c.l2norm = ti & 1;
            c.seed = 100 + (uint64_t)(ci * 4 + ti);
            char name[64];
            snprintf(name, sizeof(name), "T=%u chunk=%u", c.T, c.chunk);
            run_case(name, &c);
        }
}

static void test_head_dims(void **state)
{
    (void)state;
    static const uint32_t kv[5][2] = {{1, 1}, {7, 33}, {33, 1}, {128, 16}, {16, 256}};
    for (int i = 0; i < 5; i++) {
        bw_case c = base_case();
        c.K = kv[i][0];
        c.V = kv[i][1];
        c.T = i >= 3 ? 40 : 70;
        c.B = 1;
        c.gate = c.h0 = c.dht = 1;
        c.l2norm = i & 1;
        c.chunk = i == 2 ? 16 : 0;
        c.seed = 200 + (uint64_t)i;
        char name[64];
        snprintf(name, sizeof(name), "K=%u V=%u", c.K, c.V);
        run_case(name, &c);
    }
    bw_case c = base_case();
    c.K = 256;
    c.V = 128;
    c.T = 130; /* whole chunks of the largest head dims */
    c.B = 1;
    c.H = c.HV = 1;
    c.gate = c.l2norm = c.h0 = c.dht = 1;
    run_case("K=256 V=128", &c);
}

static void test_varlen_partial(void **state)
{
    (void)state;
    static const int32_t cu[5] = {0, 1, 64, 129, 146};
    static const int32_t cu0[4] = {0, 0, 20, 20}; /* empty sequences */
    bw_case c = base_case();
    c.B = 1;
    c.T = 146;
    c.cu = cu;
    c.N = 4;
    c.gate = c.h0 = c.dht = c.l2norm = 1;
    run_case("varlen {1,63,65,17}", &c);
    c.chunk = 16;
    c.dt = VKLA_DTYPE_BF16;
    run_case("varlen bf16 chunk 16", &c);
    c = base_case();
    c.B = 1;
    c.T = 20;
    c.cu = cu0;
    c.N = 3;
    c.gate = c.h0 = c.dht = 1;
    run_case("varlen with empty sequences", &c);
    /* only some gradients requested */
    c = base_case();
    c.gate = c.h0 = 1;
    c.skip = (1u << G_Q) | (1u << G_BETA) | (1u << G_H0);
    run_case("dk dv dg only", &c);
    c.skip = (1u << G_K) | (1u << G_V) | (1u << G_G);
    run_case("dq dbeta dh0 only", &c);
}

/* (c) numerically hard inputs */
static void test_hard(void **state)
{
    (void)state;
    bw_case c = base_case();
    c.gate = c.h0 = c.dht = 1;
    c.bmin = 1e-3;
    c.bmax = 1.1e-3;
    run_case("beta near 0", &c);
    c.bmin = 1.9;
    c.bmax = 1.95;
    run_case("beta near 2", &c);
    c = base_case();
    c.gate = c.h0 = c.dht = 1;
    c.gzero = 1;
    run_case("log gates 0", &c);
    c.gzero = 0;
    c.gmin = -20;
    c.gmax = -5;
    run_case("log gates in [-20, -5]", &c);
    c = base_case();
    c.gate = c.h0 = c.dht = c.l2norm = 1;
    c.kspread = 3;
    run_case("l2norm, key norms 1e-3 .. 1e3", &c);
    c = base_case();
    c.B = 1;
    c.H = c.HV = 1;
    c.K = 16;
    c.V = 16;
    c.T = 4096;
    c.gate = c.h0 = c.dht = 1;
    c.gmin = -0.05;
    c.gmax = 0;
    run_case("T=4096 unit keys", &c);
}

/* (d) error paths */
static void test_errors(void **state)
{
    (void)state;
    bw_case c = base_case();
    c.T = 20;
    c.gate = 1;
    c.h0 = 1;
    bw_data d;
    make_inputs(&c, &d);
    bw_dev x;
    vkla_delta_rule_backward_args a, b;
    dev_make(&c, &d, &x, &a);
    vkla_context *ctx = th_ctx();
    uint64_t n;

    b = a;
    memset(&b.dout, 0, sizeof(b.dout));
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_NULL_POINTER);
    assert_non_null(strstr(vkla_last_error(ctx), "dout"));

    b = a;
    b.dout.shape[3] = c.V + 1;
    assert_int_equal(vkla_delta_rule_backward_scratch_size(ctx, &b, &n), VKLA_ERROR_SHAPE_MISMATCH);
    b = a;
    b.dq.shape[1] = c.T - 1;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_SHAPE_MISMATCH);
    assert_non_null(strstr(vkla_last_error(ctx), "dq"));
    b = a;
    b.dht = x.in[G_H0].t;
    b.dht.shape[2] = c.K + 1;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_SHAPE_MISMATCH);
    b = a;
    b.dout.dtype = VKLA_DTYPE_F16;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_DTYPE_MISMATCH);

    /* overlapping gradients, and a gradient over an input */
    b = a;
    b.dk = b.dq;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkla_last_error(ctx), "dq overlaps dk"));
    b = a;
    b.dv = b.dout;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkla_last_error(ctx), "dv overlaps dout"));
    b = a;
    b.dbeta = b.fwd.g;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkla_last_error(ctx), "dbeta overlaps g"));

    /* gradients of absent inputs */
    b = a;
    memset(&b.fwd.g, 0, sizeof(b.fwd.g));
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkla_last_error(ctx), "dg"));
    b = a;
    memset(&b.fwd.h0, 0, sizeof(b.fwd.h0));
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkla_last_error(ctx), "dh0"));

    /* the forward's form is checked; o and ht are ignored */
    b = a;
    b.fwd.form = (vkla_form)99;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    b = a;
    b.fwd.chunk_size = 48;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_INVALID_ARGUMENT);
    b = a;
    b.fwd.form = VKLA_FORM_RECURRENT;
    b.fwd.o = x.dout.t;
    b.fwd.o.shape[0] = 9; /* not checked */
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_SUCCESS);
    assert_int_equal(vkla_delta_rule_backward_run(ctx, NULL), VKLA_ERROR_NULL_POINTER);

    /* record needs caller scratch; too small a scratch is refused */
    assert_int_equal(vkla_delta_rule_backward_scratch_size(ctx, &a, &n), VKLA_SUCCESS);
    assert_true(n > 0);
    b = a;
    vkla_buffer *small;
    assert_int_equal(vkla_buffer_create(ctx, 256, &small), VKLA_SUCCESS);
    b.scratch = small;
    assert_int_equal(vkla_delta_rule_backward_run(ctx, &b), VKLA_ERROR_SCRATCH_TOO_SMALL);
    vkla_buffer_destroy(ctx, small);
    dev_free(&x);
    free_data(&d);
    th_check_validation();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_fd),   cmocka_unit_test(test_errors),
        cmocka_unit_test(test_options_dtypes), cmocka_unit_test(test_lengths_chunks),
        cmocka_unit_test(test_head_dims),      cmocka_unit_test(test_varlen_partial),
        cmocka_unit_test(test_hard),
    };
    return cmocka_run_group_tests(tests, th_setup, th_teardown);
}
