/* Causal linear attention (SPEC section 1): every form x gate x dtype against the float64
 * reference, odd shapes, varlen, states in and out, chunk-then-decode, views, large buffers. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { G = 1, GAMMA = 2, GK = 4 };

typedef struct la_case {
    uint32_t B, T, H, K, V;
    int gates;
    int normalize;
    int h0, ht, z;
    vkla_dtype dt;
    vkla_form form;
    uint32_t chunk;
    const int32_t *cu;
    uint32_t N;
    uint64_t seed;
    double gmin; /* most negative log gate (default -1) */
    double gconst; /* when nonzero: every g and gk entry takes this value (e.g. positive) */
} la_case;

typedef struct la_data {
    size_t nq, nv, ng, nk, ns, nz;
    double *q, *k, *v, *g, *gamma, *gk, *h0, *z0;
    double *o, *ht, *zt; /* reference outputs */
} la_data;

static void make_data(const la_case *c, la_data *d)
{
    memset(d, 0, sizeof(*d));
    uint32_t N = c->cu ? c->N : c->B;
    d->nq = (size_t)c->B * c->T * c->H * c->K;
    d->nv = (size_t)c->B * c->T * c->H * c->V;
    d->ng = (size_t)c->B * c->T * c->H;
    d->ns = (size_t)N * c->H * c->K * c->V;
    d->nz = (size_t)N * c->H * c->K;
    th_rng r;
    th_seed(&r, c->seed ? c->seed : 1);
    d->q = malloc(d->nq * 8);
    d->k = malloc(d->nq * 8);
    d->v = malloc(d->nv * 8);
    double gmin = c->gmin != 0 ? c->gmin : -1.0;
    if (c->normalize) { /* positive feature maps keep q.z away from 0 */
        th_fill_uniform(&r, d->q, d->nq, 0.05, 1.0);
        th_fill_uniform(&r, d->k, d->nq, 0.05, 1.0);
    } else {
        th_fill_normal(&r, d->q, d->nq, 1.0);
        th_fill_normal(&r, d->k, d->nq, 1.0);
        th_unit_rows(d->k, d->nq / c->K, c->K);
    }
    th_fill_normal(&r, d->v, d->nv, 1.0);
    th_round(d->q, d->nq, c->dt);
    th_round(d->k, d->nq, c->dt);
    th_round(d->v, d->nv, c->dt);
    if (c->gates & G) {
        d->g = malloc(d->ng * 8);
        th_fill_uniform(&r, d->g, d->ng, gmin, 0.0);
        for (size_t i = 0; c->gconst != 0 && i < d->ng; i++)
            d->g[i] = c->gconst;
        th_round(d->g, d->ng, VKLA_DTYPE_F32);
    }
    if (c->gates & GAMMA) {
        d->gamma = malloc(c->H * 8);
        th_fill_uniform(&r, d->gamma, c->H, -0.5, -0.01);
        th_round(d->gamma, c->H, VKLA_DTYPE_F32);
    }
    if (c->gates & GK) {
        d->gk = malloc(d->nq * 8);
        th_fill_uniform(&r, d->gk, d->nq, gmin, 0.0);
        for (size_t i = 0; c->gconst != 0 && i < d->nq; i++)
            d->gk[i] = c->gconst;
        th_round(d->gk, d->nq, VKLA_DTYPE_F32);
    }
    if (c->h0) {
        d->h0 = malloc(d->ns * 8);
        th_fill_normal(&r, d->h0, d->ns, 0.5);
        th_round(d->h0, d->ns, VKLA_DTYPE_F32);
        if (c->normalize && c->z) {
            d->z0 = malloc(d->nz * 8);
            th_fill_uniform(&r, d->z0, d->nz, 0.1, 1.0);
            th_round(d->z0, d->nz, VKLA_DTYPE_F32);
        }
    }
    d->o = malloc(d->nv * 8);
    d->ht = malloc(d->ns * 8);
    d->zt = malloc(d->nz * 8);
    vkla_ref_linear_attn_args ra = {
        .B = (int)c->B, .T = (int)c->T, .H = (int)c->H, .K = (int)c->K, .V = (int)c->V,
        .cu_seqlens = c->cu, .N = (int)N, .q = d->q, .k = d->k, .v = d->v, .g = d->g,
        .g_gamma = d->gamma, .gk = d->gk, .h0 = d->h0, .z0 = d->z0,
        .scale = 1.0 / sqrt((double)c->K), .normalize = c->normalize, .eps = 1e-6,
        .o = d->o, .ht = d->ht, .zt = c->normalize ? d->zt : NULL};
    assert_int_equal(vkla_ref_linear_attn(&ra), 0);
}

static void free_data(la_data *d)
{
    free(d->q); free(d->k); free(d->v); free(d->g); free(d->gamma); free(d->gk);
    free(d->h0); free(d->z0); free(d->o); free(d->ht); free(d->zt);
}

static void run_case(const char *name, const la_case *c)
{
    la_data d;
    make_data(c, &d);
    uint32_t N = c->cu ? c->N : c->B;
    uint64_t sq[4] = {c->B, c->T, c->H, c->K}, sv[4] = {c->B, c->T, c->H, c->V};
    uint64_t sg[3] = {c->B, c->T, c->H}, sgam[1] = {c->H};
    uint64_t ss[4] = {N, c->H, c->K, c->V}, sz[3] = {N, c->H, c->K};
    th_tensor q, k, v, o, g = {0}, gamma = {0}, gk = {0}, h0 = {0}, ht = {0}, z0 = {0}, zt = {0};
    th_tensor_new(&q, c->dt, 4, sq, d.q);
    th_tensor_new(&k, c->dt, 4, sq, d.k);
    th_tensor_new(&v, c->dt, 4, sv, d.v);
    th_tensor_new(&o, c->dt, 4, sv, NULL);
    vkla_linear_attn_args a = {0};
    a.form = c->form;
    a.q = q.t; a.k = k.t; a.v = v.t; a.o = o.t;
    if (d.g) { th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g); a.g = g.t; }
    if (d.gamma) { th_tensor_new(&gamma, VKLA_DTYPE_F32, 1, sgam, d.gamma); a.g_gamma = gamma.t; }
    if (d.gk) { th_tensor_new(&gk, VKLA_DTYPE_F32, 4, sq, d.gk); a.gk = gk.t; }
    if (d.h0) { th_tensor_new(&h0, VKLA_DTYPE_F32, 4, ss, d.h0); a.h0 = h0.t; }
    if (d.z0) { th_tensor_new(&z0, VKLA_DTYPE_F32, 3, sz, d.z0); a.z0 = z0.t; }
    if (c->ht) { th_tensor_new(&ht, VKLA_DTYPE_F32, 4, ss, NULL); a.ht = ht.t; }
    if (c->normalize && c->z) { th_tensor_new(&zt, VKLA_DTYPE_F32, 3, sz, NULL); a.zt = zt.t; }
    a.cu_seqlens = c->cu;
    a.num_seqs = c->cu ? c->N : 0;
    a.normalize = c->normalize;
    a.chunk_size = c->chunk;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vkla_result r = vkla_linear_attn_run(th_ctx(), &a);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (getenv("TH_TIME")) fprintf(stderr, "%-40s %8.1f ms\n", name, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: %s: %s", name, vkla_result_string(r), vkla_last_error(th_ctx()));
    float *out = malloc(d.nv * sizeof(float));
    th_tensor_read(&o, out);
    char what[256];
    snprintf(what, sizeof(what), "%s: o", name);
    th_assert_close(what, d.o, out, d.nv, th_target(d.o, d.nv, c->dt));
    free(out);
    if (c->ht) {
        float *st = malloc(d.ns * sizeof(float));
        th_tensor_read(&ht, st);
        snprintf(what, sizeof(what), "%s: ht", name);
        th_assert_close(what, d.ht, st, d.ns, 1e-9);
        free(st);
    }
    if (c->normalize && c->z) {
        float *zs = malloc(d.nz * sizeof(float));
        th_tensor_read(&zt, zs);
        snprintf(what, sizeof(what), "%s: zt", name);
        th_assert_close(what, d.zt, zs, d.nz, 1e-9);
        free(zs);
    }
    th_tensor *all[] = {&q, &k, &v, &o, &g, &gamma, &gk, &h0, &ht, &z0, &zt};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
    free_data(&d);
    th_check_validation();
}

static const char *dt_name(vkla_dtype d) { return vkla_dtype_name(d); }
static const char *form_name(vkla_form f) { return vkla_form_name(f); }

/* every form x gate combination x dtype, K != V, states in and out */
static void test_forms_gates_dtypes(void **state)
{
    (void)state;
    const int gates[] = {0, G, GAMMA, GK, G | GAMMA | GK};
    const vkla_dtype dts[] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    const vkla_form forms[] = {VKLA_FORM_RECURRENT, VKLA_FORM_CHUNK};
    for (int f = 0; f < 2; f++)
        for (int gi = 0; gi < 5; gi++)
            for (int di = 0; di < 3; di++) {
                la_case c = {.B = 2, .T = 70, .H = 2, .K = 32, .V = 48, .gates = gates[gi],
                             .h0 = 1, .ht = 1, .dt = dts[di], .form = forms[f],
                             .seed = (uint64_t)(100 + f * 31 + gi * 7 + di)};
                char name[128];
                snprintf(name, sizeof(name), "%s gates=%d %s", form_name(forms[f]), gates[gi], dt_name(dts[di]));
                run_case(name, &c);
            }
}

/* T in {1, 63, 64, 65, 1000} */
static void test_lengths(void **state)
{
    (void)state;
    const uint32_t Ts[] = {1, 63, 64, 65, 1000};
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 5; i++) {
            la_case c = {.B = 1, .T = Ts[i], .H = 2, .K = 32, .V = 32, .gates = G, .h0 = i % 2,
                         .ht = 1, .dt = VKLA_DTYPE_F32,
                         .form = f ? VKLA_FORM_CHUNK : VKLA_FORM_RECURRENT, .seed = 7 + i};
            char name[64];
            snprintf(name, sizeof(name), "%s T=%u", f ? "chunk" : "recurrent", Ts[i]);
            run_case(name, &c);
        }
}

/* K and V over {1, 16, 48, 64, 128, 256} */
static void test_head_dims(void **state)
{
    (void)state;
    const uint32_t kv[][2] = {{1, 16}, {16, 1}, {48, 64}, {64, 128}, {128, 48}, {256, 256}, {1, 1}};
    for (int f = 0; f < 2; f++)
        for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
            la_case c = {.B = 1, .T = 40, .H = 1, .K = kv[i][0], .V = kv[i][1],
                         .gates = (i % 2) ? GK : G, .h0 = 1, .ht = 1, .dt = VKLA_DTYPE_F32,
                         .form = f ? VKLA_FORM_CHUNK : VKLA_FORM_RECURRENT, .seed = 50 + i};
            char name[64];
            snprintf(name, sizeof(name), "%s K=%u V=%u", f ? "chunk" : "recurrent", c.K, c.V);
            run_case(name, &c);
        }
}

/* strong decays (log gate down to -5) stay accurate */
static void test_strong_decay(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++)
        for (int gi = 0; gi < 2; gi++) {
            la_case c = {.B = 1, .T = 130, .H = 2, .K = 32, .V = 32, .gates = gi ? GK : G,
                         .h0 = 1, .ht = 1, .dt = VKLA_DTYPE_F32, .gmin = -5.0,
                         .form = f ? VKLA_FORM_CHUNK : VKLA_FORM_RECURRENT, .seed = 77 + gi};
            run_case(f ? "chunk strong decay" : "recurrent strong decay", &c);
        }
}

/* packed sequences, including an empty one and one of a single token */
static void test_varlen(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 1, 66, 66, 130, 200};
    const int gates[] = {G, GK | GAMMA, 0};
    for (int f = 0; f < 2; f++)
        for (int gi = 0; gi < 3; gi++)
            for (int di = 0; di < 2; di++) {
                la_case c = {.B = 1, .T = 200, .H = 2, .K = 32, .V = 16, .gates = gates[gi],
                             .h0 = 1, .ht = 1, .dt = di ? VKLA_DTYPE_BF16 : VKLA_DTYPE_F32,
                             .form = f ? VKLA_FORM_CHUNK : VKLA_FORM_RECURRENT, .cu = cu, .N = 5,
                             .seed = 300 + gi};
                char name[64];
                snprintf(name, sizeof(name), "varlen %s gates=%d %s", f ? "chunk" : "recurrent",
                         gates[gi], dt_name(c.dt));
                run_case(name, &c);
            }
}

static void test_normalize(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++)
        for (int gi = 0; gi < 3; gi++)
            for (int di = 0; di < 2; di++) {
                const int gates[] = {0, G | GAMMA, GK};
                la_case c = {.B = 2, .T = 100, .H = 2, .K = 24, .V = 40, .gates = gates[gi],
                             .normalize = 1, .h0 = 1, .ht = 1, .z = 1,
                             .dt = di ? VKLA_DTYPE_F16 : VKLA_DTYPE_F32,
                             .form = f ? VKLA_FORM_CHUNK : VKLA_FORM_RECURRENT, .seed = 400 + gi};
                char name[64];
                snprintf(name, sizeof(name), "normalize %s gates=%d %s", f ? "chunk" : "recurrent",
                         gates[gi], dt_name(c.dt));
                run_case(name, &c);
            }
}

static void test_chunk_sizes(void **state)
{
    (void)state;
    const uint32_t cs[] = {16, 32, 64};
    for (int i = 0; i < 3; i++)
        for (int gi = 0; gi < 2; gi++) {
            la_case c = {.B = 1, .T = 150, .H = 2, .K = 64, .V = 64, .gates = gi ? GK : G | GAMMA,
                         .h0 = 1, .ht = 1, .dt = VKLA_DTYPE_F32, .form = VKLA_FORM_CHUNK,
                         .chunk = cs[i], .seed = 500 + i};
            char name[64];
            snprintf(name, sizeof(name), "chunk size %u gates=%d", cs[i], c.gates);
            run_case(name, &c);
        }
}

/* positive log decays (a growing state): the chunk form must match the recurrence, not clamp */
static void test_positive_gates(void **state)
{
    (void)state;
    const int gates[] = {G, GK, G | GK};
    const uint32_t cs[] = {16, 64};
    for (int f = 0; f < 2; f++)
        for (int gi = 0; gi < 3; gi++)
            for (int ci = 0; ci < 2; ci++) {
                la_case c = {.B = 1, .T = 50, .H = 2, .K = 16, .V = 16, .gates = gates[gi],
                             .h0 = 1, .ht = 1, .dt = VKLA_DTYPE_F32, .gconst = 0.05,
                             .form = f ? VKLA_FORM_CHUNK : VKLA_FORM_RECURRENT, .chunk = cs[ci],
                             .seed = 600 + gi};
                char name[64];
                snprintf(name, sizeof(name), "positive gates %s gates=%d C=%u",
                         f ? "chunk" : "recurrent", gates[gi], cs[ci]);
                run_case(name, &c);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms_gates_dtypes),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_head_dims),
        cmocka_unit_test(test_strong_decay),
        cmocka_unit_test(test_varlen),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_chunk_sizes),
        cmocka_unit_test(test_positive_gates),
    };
    return cmocka_run_group_tests_name("linear_attn", tests, th_setup, th_teardown);
}
