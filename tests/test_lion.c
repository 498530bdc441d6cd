/* LION bidirectional linear attention (SPEC section 3): every form x variant (LIT, D, S) x
 * normalize x dtype against the float64 reference, the forms against each other, odd shapes,
 * varlen, strong and absent decays, masked-out keys, chunk sizes, views, caller scratch, the
 * GPU lane-block configuration, and the error paths.
 *
 * Test time: lavapipe JIT-compiles each distinct pipeline at its first dispatch. LION builds its
 * four heavy kernels once (fp32) whatever the shape, dtype or options, plus small per-dtype
 * kernels, so cases vary shapes freely; only the lane-block test adds pipelines. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { G = 1, GAMMA = 2 };

typedef struct lion_case {
    uint32_t B, T, H, K, V;
    int gates;          /* G (LION-S), GAMMA (LION-D), both, or 0 (LION-LIT) */
    int normalize;
    vkla_dtype dt;
    vkla_form form;
    uint32_t chunk;
    const int32_t *cu;
    uint32_t N;
    uint64_t seed;
    double gmin, gmax;  /* range of g (default [-1, 0)) */
    double gamma;       /* g_gamma for every head (default: per head in [-0.5, -0.01]) */
    int zero_keys;      /* every third key vector is zero */
} lion_case;

typedef struct lion_data {
    size_t nq, nv, ng;
    double *q, *k, *v, *g, *gamma;
    double *o; /* reference */
} lion_data;

static void make_data(const lion_case *c, lion_data *d)
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
    if (c->normalize) { /* positive feature maps keep the denominators away from 0 */
        th_fill_uniform(&r, d->q, d->nq, 0.05, 1.0);
        th_fill_uniform(&r, d->k, d->nq, 0.05, 1.0);
    } else {
        th_fill_normal(&r, d->q, d->nq, 1.0);
        th_fill_normal(&r, d->k, d->nq, 1.0);
        th_unit_rows(d->k, d->nq / c->K, c->K);
    }
    th_fill_normal(&r, d->v, d->nv, 1.0);
    if (c->zero_keys)
        for (size_t row = 0; row < d->nq / c->K; row += 3)
            memset(d->k + row * c->K, 0, c->K * sizeof(double));
    th_round(d->q, d->nq, c->dt);
    th_round(d->k, d->nq, c->dt);
    th_round(d->v, d->nv, c->dt);
    if (c->gates & G) {
        d->g = malloc(d->ng * 8);
        double lo = c->gmin != 0 ? c->gmin : -1.0, hi = c->gmax;
        th_fill_uniform(&r, d->g, d->ng, lo, hi);
        th_round(d->g, d->ng, VKLA_DTYPE_F32);
    }
    if (c->gates & GAMMA) {
        d->gamma = malloc(c->H * 8);
        if (c->gamma != 0)
            for (uint32_t h = 0; h < c->H; h++)
                d->gamma[h] = c->gamma;
        else
            th_fill_uniform(&r, d->gamma, c->H, -0.5, -0.01);
        th_round(d->gamma, c->H, VKLA_DTYPE_F32);
    }
    d->o = malloc(d->nv * 8);
    vkla_ref_lion_args ra = {
        .B = (int)c->B, .T = (int)c->T, .H = (int)c->H, .K = (int)c->K, .V = (int)c->V,
        .cu_seqlens = c->cu, .N = (int)(c->cu ? c->N : c->B), .q = d->q, .k = d->k, .v = d->v,
        .g = d->g, .g_gamma = d->gamma, .scale = 1.0 / sqrt((double)c->K),
        .normalize = c->normalize, .eps = 1e-6, .o = d->o};
    assert_int_equal(vkla_ref_lion(&ra), 0);
}

static void free_data(lion_data *d)
{
    free(d->q); free(d->k); free(d->v); free(d->g); free(d->gamma); free(d->o);
}

/* Runs the case on the device; out (d->nv floats) receives o. */
static void run_device(const char *name, const lion_case *c, const lion_data *d, float *out)
{
    uint64_t sq[4] = {c->B, c->T, c->H, c->K}, sv[4] = {c->B, c->T, c->H, c->V};
    uint64_t sg[3] = {c->B, c->T, c->H}, sgam[1] = {c->H};
    th_tensor q, k, v, o, g = {0}, gamma = {0};
    th_tensor_new(&q, c->dt, 4, sq, d->q);
    th_tensor_new(&k, c->dt, 4, sq, d->k);
    th_tensor_new(&v, c->dt, 4, sv, d->v);
    th_tensor_new(&o, c->dt, 4, sv, NULL);
    vkla_lion_args a = {0};
    a.form = c->form;
    a.q = q.t; a.k = k.t; a.v = v.t; a.o = o.t;
    if (d->g) { th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d->g); a.g = g.t; }
    if (d->gamma) { th_tensor_new(&gamma, VKLA_DTYPE_F32, 1, sgam, d->gamma); a.g_gamma = gamma.t; }
    a.cu_seqlens = c->cu;
    a.num_seqs = c->cu ? c->N : 0;
    a.normalize = c->normalize;
    a.chunk_size = c->chunk;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vkla_result r = vkla_lion_run(th_ctx(), &a);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (getenv("TH_TIME"))
        fprintf(stderr, "%-48s %8.1f ms\n", name,
                (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: %s: %s", name, vkla_result_string(r), vkla_last_error(th_ctx()));
    th_tensor_read(&o, out);
    th_tensor *all[] = {&q, &k, &v, &o, &g, &gamma};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
    th_check_validation();
}

static void run_case(const char *name, const lion_case *c)
{
    lion_data d;
    make_data(c, &d);
    float *out = malloc(d.nv * sizeof(float));
    run_device(name, c, &d, out);
    char what[256];
    snprintf(what, sizeof(what), "%s: o", name);
    th_assert_close(what, d.o, out, d.nv, th_target(d.o, d.nv, c->dt));
    free(out);
    free_data(&d);
}

static const char *form_name(vkla_form f) { return vkla_form_name(f); }
static const char *variant_name(int gates)
{
    return gates == (G | GAMMA) ? "S+D" : gates == G ? "S" : gates == GAMMA ? "D" : "LIT";
}

static const vkla_form forms[3] = {VKLA_FORM_CHUNK, VKLA_FORM_ATTN, VKLA_FORM_RNN};

/* every form x variant x normalize x dtype; K != V; two batch rows; T not a tile multiple */
static void test_forms_variants_dtypes(void **state)
{
    (void)state;
    const int gates[] = {0, GAMMA, G};
    const vkla_dtype dts[] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    for (int f = 0; f < 3; f++)
        for (int gi = 0; gi < 3; gi++)
            for (int nz = 0; nz < 2; nz++)
                for (int di = 0; di < 3; di++) {
                    lion_case c = {.B = 2, .T = 100, .H = 2, .K = 32, .V = 48,
                                   .gates = gates[gi], .normalize = nz, .dt = dts[di],
                                   .form = forms[f],
                                   .seed = (uint64_t)(100 + f * 31 + gi * 7 + nz * 3 + di)};
                    char name[128];
                    snprintf(name, sizeof(name), "%s %s%s %s", form_name(forms[f]),
                             variant_name(gates[gi]), nz ? " normalize" : "",
                             vkla_dtype_name(dts[di]));
                    run_case(name, &c);
                }
}

/* the three forms agree with each other (and with the reference) on a longer sequence with a
 * mild decay, where far tokens still matter; g and g_gamma together add up */
static void test_forms_agree(void **state)
{
    (void)state;
    for (int nz = 0; nz < 2; nz++) {
        lion_case c = {.B = 1, .T = 700, .H = 2, .K = 64, .V = 64, .gates = G | GAMMA,
                       .normalize = nz, .dt = VKLA_DTYPE_F32, .gmin = -0.02, .gamma = -0.005,
                       .seed = 900 + nz};
        lion_data d;
        make_data(&c, &d);
        float *out[3];
        for (int f = 0; f < 3; f++) {
            c.form = forms[f];
            out[f] = malloc(d.nv * sizeof(float));
            char name[64];
            snprintf(name, sizeof(name), "agree %s%s", form_name(forms[f]), nz ? " normalize" : "");
            run_device(name, &c, &d, out[f]);
            char what[96];
            snprintf(what, sizeof(what), "%s: o vs reference", name);
            th_assert_close(what, d.o, out[f], d.nv, 1e-9);
        }
        /* attn as the reference of the other two */
        double *ref = malloc(d.nv * sizeof(double));
        for (size_t i = 0; i < d.nv; i++)
            ref[i] = out[1][i];
        th_assert_close("agree: chunk vs attn", ref, out[0], d.nv, 1e-10);
        th_assert_close("agree: rnn vs attn", ref, out[2], d.nv, 1e-10);
        free(ref);
        for (int f = 0; f < 3; f++)
            free(out[f]);
        free_data(&d);
    }
}

/* T in {1, 63, 64, 65, 1000} */
static void test_lengths(void **state)
{
    (void)state;
    const uint32_t Ts[] = {1, 63, 64, 65, 1000};
    for (int f = 0; f < 3; f++)
        for (int i = 0; i < 5; i++) {
            lion_case c = {.B = 1, .T = Ts[i], .H = 2, .K = 32, .V = 32, .gates = G,
                           .normalize = i % 2, .dt = VKLA_DTYPE_F32, .form = forms[f],
                           .gmin = -0.2, .seed = 7 + i};
            char name[64];
            snprintf(name, sizeof(name), "%s T=%u", form_name(forms[f]), Ts[i]);
            run_case(name, &c);
        }
}

/* K and V over {1, 16, 48, 64, 128, 256}: several tiles over K and V, odd sizes that take the
 * packed path */
static void test_head_dims(void **state)
{
    (void)state;
    const uint32_t kv[][2] = {{1, 16}, {16, 1}, {48, 64}, {64, 128}, {128, 48}, {256, 256},
                              {1, 1}, {20, 6}};
    for (int f = 0; f < 3; f++)
        for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
            lion_case c = {.B = 1, .T = 90, .H = 2, .K = kv[i][0], .V = kv[i][1],
                           .gates = (i % 2) ? GAMMA : G, .normalize = i == 3 || i == 5,
                           .dt = VKLA_DTYPE_F32, .form = forms[f], .seed = 50 + i};
            char name[64];
            snprintf(name, sizeof(name), "%s K=%u V=%u", form_name(forms[f]), c.K, c.V);
            run_case(name, &c);
        }
}

/* packed sequences, including an empty one and one of a single token: no attention across
 * sequence boundaries (the reference treats each segment on its own) */
static void test_varlen(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 1, 66, 66, 130, 300};
    const int gates[] = {G, GAMMA, 0};
    for (int f = 0; f < 3; f++)
        for (int gi = 0; gi < 3; gi++)
            for (int di = 0; di < 2; di++) {
                lion_case c = {.B = 1, .T = 300, .H = 2, .K = 32, .V = 16, .gates = gates[gi],
                               .normalize = gi == 1, .dt = di ? VKLA_DTYPE_BF16 : VKLA_DTYPE_F32,
                               .form = forms[f], .cu = cu, .N = 5, .gmin = -0.1,
                               .seed = 300 + gi};
                char name[64];
                snprintf(name, sizeof(name), "varlen %s %s %s", form_name(forms[f]),
                         variant_name(gates[gi]), vkla_dtype_name(c.dt));
                run_case(name, &c);
            }
}

/* strong decays (log decay -20 per token, over 1000 tokens) stay finite and accurate; no decay at
 * all (LION-LIT) over 1000 tokens too */
static void test_strong_and_no_decay(void **state)
{
    (void)state;
    for (int f = 0; f < 3; f++) {
        for (int nz = 0; nz < 2; nz++) {
            lion_case s = {.B = 1, .T = 1000, .H = 2, .K = 32, .V = 32, .gates = G,
                           .normalize = nz, .dt = VKLA_DTYPE_F32, .form = forms[f],
                           .gmin = -20.0, .gmax = -19.0, .seed = 77 + nz};
            char name[64];
            snprintf(name, sizeof(name), "%s g=-20%s", form_name(forms[f]), nz ? " normalize" : "");
            run_case(name, &s);
            lion_case dd = s;
            dd.gates = GAMMA;
            dd.gamma = -20.0;
            snprintf(name, sizeof(name), "%s g_gamma=-20%s", form_name(forms[f]),
                     nz ? " normalize" : "");
            run_case(name, &dd);
            lion_case lit = s;
            lit.gates = 0;
            snprintf(name, sizeof(name), "%s LIT T=1000%s", form_name(forms[f]),
                     nz ? " normalize" : "");
            run_case(name, &lit);
        }
        /* mixed: decays from -20 to 0 (hard resets next to no decay) */
        lion_case m = {.B = 1, .T = 500, .H = 2, .K = 32, .V = 32, .gates = G, .normalize = 1,
                       .dt = VKLA_DTYPE_F32, .form = forms[f], .gmin = -20.0, .seed = 79};
        char name[64];
        snprintf(name, sizeof(name), "%s g in [-20, 0)", form_name(forms[f]));
        run_case(name, &m);
    }
}

/* a decay close to 1 over a long sequence (RetNet-style g_gamma = log(1 - 2^-12)): far tokens
 * matter, and the scans must not let the fp32 rounding of the per-step decay add up */
static void test_weak_decay_long(void **state)
{
    (void)state;
    for (int f = 0; f < 3; f++) {
        lion_case c = {.B = 1, .T = 2048, .H = 1, .K = 32, .V = 32, .gates = GAMMA,
                       .dt = VKLA_DTYPE_F32, .form = forms[f], .gamma = log(1.0 - 1.0 / 4096.0),
                       .seed = 90};
        char name[64];
        snprintf(name, sizeof(name), "%s g_gamma=log(1-2^-12) T=2048", form_name(forms[f]));
        run_case(name, &c);
    }
}

/* a key masked out by a zero key vector contributes nothing: the outputs do not change when
 * its value changes (with and without normalize), and they match the reference */
static void test_zero_keys(void **state)
{
    (void)state;
    for (int f = 0; f < 3; f++)
        for (int nz = 0; nz < 2; nz++) {
            lion_case c = {.B = 1, .T = 150, .H = 2, .K = 32, .V = 32, .gates = G,
                           .normalize = nz, .dt = VKLA_DTYPE_F32, .form = forms[f],
                           .gmin = -0.1, .zero_keys = 1, .seed = 600 + nz};
            char name[64];
            snprintf(name, sizeof(name), "%s zero keys%s", form_name(forms[f]),
                     nz ? " normalize" : "");
            lion_data d;
            make_data(&c, &d);
            float *a = malloc(d.nv * sizeof(float)), *b = malloc(d.nv * sizeof(float));
            run_device(name, &c, &d, a);
            th_assert_close(name, d.o, a, d.nv, 1e-9);
            /* new values for the masked-out tokens */
            for (size_t row = 0; row < d.nq / c.K; row += 3)
                for (uint32_t x = 0; x < c.V; x++)
                    d.v[row * c.V + x] = 1000.0 + x;
            run_device(name, &c, &d, b);
            for (size_t i = 0; i < d.nv; i++)
                if (a[i] != b[i])
                    fail_msg("%s: output %zu changed (%g -> %g) with the value of a zero key",
                             name, i, (double)a[i], (double)b[i]);
            free(a);
            free(b);
            free_data(&d);
        }
}

static void test_chunk_sizes(void **state)
{
    (void)state;
    static const int32_t cu[] = {0, 40, 41, 141, 250};
    const uint32_t cs[] = {16, 32, 64};
    for (int i = 0; i < 3; i++)
        for (int vl = 0; vl < 2; vl++) {
            lion_case c = {.B = vl ? 1 : 2, .T = vl ? 250 : 150, .H = 2, .K = 64, .V = 64,
                           .gates = G | GAMMA, .normalize = vl, .dt = VKLA_DTYPE_F32,
                           .form = VKLA_FORM_CHUNK, .chunk = cs[i], .cu = vl ? cu : NULL,
                           .N = 4, .gmin = -0.3, .seed = 500 + i};
            char name[64];
            snprintf(name, sizeof(name), "chunk size %u%s", cs[i], vl ? " varlen" : "");
            run_case(name, &c);
        }
}

/* q, k, v as strided views into one fused projection buffer [B,T,H,F]; o written into a padded
 * buffer whose padding must stay untouched; f32 (direct rows) and f16 (packed rows) */
static void test_views(void **state)
{
    (void)state;
    const uint32_t B = 2, T = 70, H = 2, K = 16, V = 16, F = 2 * K + V + 4, VS = V + 3;
    for (int di = 0; di < 2; di++)
        for (int f = 0; f < 4; f++) {
            /* f = 3: LION-LIT on the short-sequence path (forced) */
            vkla_dtype dt = di ? VKLA_DTYPE_F16 : VKLA_DTYPE_F32;
            lion_case c = {.B = B, .T = T, .H = H, .K = K, .V = V, .gates = f < 3 ? G : 0,
                           .dt = dt, .form = forms[f % 3], .seed = 700 + f};
            if (f == 3)
                setenv("VKLA_LION_SHORT", "1", 1);
            lion_data d;
            make_data(&c, &d);
            size_t es = vkla_dtype_size(dt), rows = (size_t)B * T * H;
            float *fused = calloc(rows * F, sizeof(float));
            for (size_t r = 0; r < rows; r++) {
                for (uint32_t x = 0; x < K; x++) {
                    fused[r * F + x] = (float)d.q[r * K + x];
                    fused[r * F + K + x] = (float)d.k[r * K + x];
                }
                for (uint32_t x = 0; x < V; x++)
                    fused[r * F + 2 * K + x] = (float)d.v[r * V + x];
            }
            void *host = malloc(rows * F * es);
            vkla_convert(host, dt, fused, VKLA_DTYPE_F32, rows * F);
            vkla_buffer *fb, *ob;
            assert_int_equal(vkla_buffer_create(th_ctx(), rows * F * es, &fb), VKLA_SUCCESS);
            assert_int_equal(vkla_buffer_upload(th_ctx(), fb, 0, host, rows * F * es), VKLA_SUCCESS);
            assert_int_equal(vkla_buffer_create(th_ctx(), rows * VS * es, &ob), VKLA_SUCCESS);
            assert_int_equal(vkla_buffer_fill(th_ctx(), ob, 0, rows * VS * es, 0x7f7f7f7fu),
                             VKLA_SUCCESS);
            uint64_t sq[4] = {B, T, H, K}, sv[4] = {B, T, H, V};
            uint64_t st[4] = {(uint64_t)T * H * F, (uint64_t)H * F, F, 1};
            uint64_t so[4] = {(uint64_t)T * H * VS, (uint64_t)H * VS, VS, 1};
            vkla_lion_args a = {0};
            a.form = c.form;
            a.q = vkla_tensor_make(fb, 0, dt, 4, sq);
            a.k = vkla_tensor_make(fb, K * es, dt, 4, sq);
            a.v = vkla_tensor_make(fb, 2 * K * es, dt, 4, sv);
            a.o = vkla_tensor_make(ob, 0, dt, 4, sv);
            memcpy(a.q.strides, st, sizeof(st));
            memcpy(a.k.strides, st, sizeof(st));
            memcpy(a.v.strides, st, sizeof(st));
            memcpy(a.o.strides, so, sizeof(so));
            uint64_t sg[3] = {B, T, H};
            th_tensor g = {0};
            if (d.g) {
                th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g);
                a.g = g.t;
            }
            vkla_result r = vkla_lion_run(th_ctx(), &a);
            unsetenv("VKLA_LION_SHORT");
            if (r != VKLA_SUCCESS)
                fail_msg("views %s: %s: %s", form_name(c.form), vkla_result_string(r),
                         vkla_last_error(th_ctx()));
            void *ohost = malloc(rows * VS * es);
            float *of = malloc(rows * VS * sizeof(float)), *out = malloc(d.nv * sizeof(float));
            assert_int_equal(vkla_buffer_download(th_ctx(), ob, 0, ohost, rows * VS * es),
                             VKLA_SUCCESS);
            vkla_convert(of, VKLA_DTYPE_F32, ohost, dt, rows * VS);
            for (size_t rr = 0; rr < rows; rr++) {
                for (uint32_t x = 0; x < V; x++)
                    out[rr * V + x] = of[rr * VS + x];
                for (uint32_t x = V; x < VS; x++) {
                    uint8_t want[4], got[4];
                    memset(want, 0x7f, sizeof(want));
                    memcpy(got, (uint8_t *)ohost + (rr * VS + x) * es, es);
                    if (memcmp(want, got, es))
                        fail_msg("views %s: padding of o row %zu overwritten", form_name(c.form), rr);
                }
            }
            char name[64];
            snprintf(name, sizeof(name), "views %s %s", f < 3 ? form_name(c.form) : "short",
                     vkla_dtype_name(dt));
            th_assert_close(name, d.o, out, d.nv, th_target(d.o, d.nv, dt));
            free(ohost); free(of); free(out); free(host); free(fused);
            th_tensor_free(&g);
            vkla_buffer_destroy(th_ctx(), fb);
            vkla_buffer_destroy(th_ctx(), ob);
            free_data(&d);
            th_check_validation();
        }
}

/* The short-sequence path (host/lion_short.c: LION-LIT with K, V <= 16, one lane per sequence
 * and head), forced on: T = 1, 5, 21, 63, K and V in {1, 5, 11, 16}, normalize, every dtype,
 * several heads and batch rows, every form's request; varlen with an empty and a one-token
 * sequence; a decay, which it does not cover, still goes to the form's kernels. Then the
 * automatic choice. */
static void test_short_path(void **state)
{
    (void)state;
    setenv("VKLA_LION_SHORT", "1", 1);
    const uint32_t Ts[] = {1, 5, 21, 63};
    const uint32_t kv[][2] = {{11, 11}, {1, 16}, {16, 1}, {16, 16}, {5, 11}};
    const vkla_dtype dts[] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) {
            lion_case c = {.B = 1 + (uint32_t)(i + j) % 3, .T = Ts[i], .H = 1 + (uint32_t)j % 3,
                           .K = kv[j][0], .V = kv[j][1], .normalize = (i + j) % 2,
                           .dt = dts[(i + 2 * j) % 3], .form = forms[(i + j) % 3],
                           .seed = 900 + 10 * i + j};
            char name[96];
            snprintf(name, sizeof(name), "short T=%u K=%u V=%u H=%u%s %s", c.T, c.K, c.V, c.H,
                     c.normalize ? " normalize" : "", vkla_dtype_name(c.dt));
            run_case(name, &c);
        }
    static const int32_t cu[] = {0, 1, 22, 22, 85, 90};
    for (int di = 0; di < 3; di++)
        for (int nz = 0; nz < 2; nz++) {
            lion_case c = {.B = 1, .T = 90, .H = 2, .K = 11, .V = 7, .normalize = nz,
                           .dt = dts[di], .cu = cu, .N = 5, .seed = 950 + 2 * di + nz};
            char name[96];
            snprintf(name, sizeof(name), "short varlen%s %s", nz ? " normalize" : "",
                     vkla_dtype_name(c.dt));
            run_case(name, &c);
        }
    lion_case gc = {.B = 2, .T = 21, .H = 2, .K = 11, .V = 11, .gates = G, .seed = 960};
    run_case("short forced, LION-S (form kernels)", &gc);
    unsetenv("VKLA_LION_SHORT");

    /* the automatic choice, seen through the scratch it asks for: on at T = 21 and 64, off at
     * T = 65, with a decay, and with K = 17 */
    const uint32_t autoT[] = {21, 64, 65, 21, 21};
    for (int i = 0; i < 5; i++) {
        uint64_t sq[4] = {2, autoT[i], 3, i == 4 ? 17 : 11};
        th_tensor q, k, v, o, g = {0};
        th_tensor_new(&q, VKLA_DTYPE_F32, 4, sq, NULL);
        th_tensor_new(&k, VKLA_DTYPE_F32, 4, sq, NULL);
        th_tensor_new(&v, VKLA_DTYPE_F32, 4, sq, NULL);
        th_tensor_new(&o, VKLA_DTYPE_F32, 4, sq, NULL);
        vkla_lion_args a = {0};
        a.q = q.t; a.k = k.t; a.v = v.t; a.o = o.t;
        if (i == 3) {
            th_tensor_new(&g, VKLA_DTYPE_F32, 3, sq, NULL); /* [B, T, H]: the first 3 dims */
            a.g = g.t;
        }
        uint64_t need = 1;
        assert_int_equal(vkla_lion_scratch_size(th_ctx(), &a, &need), VKLA_SUCCESS);
        if ((need == 0) != (i < 2))
            fail_msg("short path %s for T = %u%s", i < 2 ? "not chosen" : "chosen", autoT[i],
                     i == 3 ? " with g" : i == 4 ? ", K = 17" : "");
        th_tensor *all[] = {&q, &k, &v, &o, &g};
        for (int t = 0; t < 5; t++)
            th_tensor_free(all[t]);
    }
}

/* a caller scratch at an offset; its size query; too small a scratch */
static void test_caller_scratch(void **state)
{
    (void)state;
    for (int f = 0; f < 3; f++) {
        lion_case c = {.B = 1, .T = 130, .H = 2, .K = 24, .V = 32, .gates = G, .normalize = 1,
                       .dt = VKLA_DTYPE_BF16, .form = forms[f], .seed = 800 + f};
        lion_data d;
        make_data(&c, &d);
        uint64_t sq[4] = {c.B, c.T, c.H, c.K}, sv[4] = {c.B, c.T, c.H, c.V}, sg[3] = {c.B, c.T, c.H};
        th_tensor q, k, v, o, g;
        th_tensor_new(&q, c.dt, 4, sq, d.q);
        th_tensor_new(&k, c.dt, 4, sq, d.k);
        th_tensor_new(&v, c.dt, 4, sv, d.v);
        th_tensor_new(&o, c.dt, 4, sv, NULL);
        th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g);
        vkla_lion_args a = {0};
        a.form = c.form;
        a.q = q.t; a.k = k.t; a.v = v.t; a.o = o.t; a.g = g.t;
        a.normalize = 1;
        uint64_t need = 0;
        assert_int_equal(vkla_lion_scratch_size(th_ctx(), &a, &need), VKLA_SUCCESS);
        assert_true(need > 0); /* bf16 rows are packed to f32 */
        vkla_buffer *scr;
        assert_int_equal(vkla_buffer_create(th_ctx(), need + 512, &scr), VKLA_SUCCESS);
        a.scratch = scr;
        a.scratch_offset = 512;
        assert_int_equal(vkla_lion_run(th_ctx(), &a), VKLA_SUCCESS);
        float *out = malloc(d.nv * sizeof(float));
        th_tensor_read(&o, out);
        th_assert_close("caller scratch", d.o, out, d.nv, th_target(d.o, d.nv, c.dt));
        a.scratch_offset = 1024;
        assert_int_equal(vkla_lion_run(th_ctx(), &a), VKLA_ERROR_SCRATCH_TOO_SMALL);
        free(out);
        vkla_buffer_destroy(th_ctx(), scr);
        th_tensor *all[] = {&q, &k, &v, &o, &g};
        for (size_t i = 0; i < 5; i++)
            th_tensor_free(all[i]);
        free_data(&d);
        th_check_validation();
    }
}

/* Long sequences (host/lion_tsplit.c): the chunk form as pieces of T with both directions'
 * states carried across the piece boundaries, forced by a scratch limit below the call's own
 * need (odd T, last pieces of one token, every variant, normalize, dtypes, chunk sizes), and
 * by a (sequence, head) slab beyond the device's maxStorageBufferRange. */
static void test_long_pieces(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    lion_case cases[10] = {
        {.B = 2, .T = 203, .H = 2, .K = 20, .V = 24, .gates = G, .dt = VKLA_DTYPE_F32,
         .chunk = 16, .seed = 900},
        {.B = 1, .T = 321, .H = 3, .K = 32, .V = 32, .gates = GAMMA, .normalize = 1,
         .dt = VKLA_DTYPE_BF16, .chunk = 16, .seed = 901},
        {.B = 2, .T = 200, .H = 1, .K = 12, .V = 20, .normalize = 1, .dt = VKLA_DTYPE_F16,
         .chunk = 32, .seed = 902},
        {.B = 1, .T = 450, .H = 2, .K = 64, .V = 64, .gates = G | GAMMA, .normalize = 1,
         .dt = VKLA_DTYPE_F32, .chunk = 64, .seed = 903},
    };
    /* and six drawn at random (fixed seed): any K and V, odd T, every option */
    th_rng rr;
    th_seed(&rr, 4242);
    for (int i = 4; i < 10; i++) {
        const th_shape d = th_draw_shape(&rr, 2.99, 200, 480, 2.99);
        cases[i] = (lion_case){.B = d.B, .T = d.T, .H = d.H, .K = d.K, .V = d.V, .gates = d.opts,
                               .normalize = d.normalize, .dt = d.dt, .chunk = 16,
                               .seed = 920 + (uint64_t)i};
    }
    const double fractions[3] = {0.99, 0.5, 0.3};
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        lion_case c = cases[ci];
        c.form = VKLA_FORM_CHUNK;
        if (ci == 2) /* the 8 x 8 lane blocks of GPUs */
            setenv("VKLA_LION_BLOCK", "8", 1);
        lion_data d;
        make_data(&c, &d);
        uint64_t sq[4] = {c.B, c.T, c.H, c.K}, sv[4] = {c.B, c.T, c.H, c.V};
        uint64_t sg[3] = {c.B, c.T, c.H}, sgam[1] = {c.H};
        th_tensor q, k, v, o, g = {0}, gamma = {0};
        th_tensor_new(&q, c.dt, 4, sq, d.q);
        th_tensor_new(&k, c.dt, 4, sq, d.k);
        th_tensor_new(&v, c.dt, 4, sv, d.v);
        th_tensor_new(&o, c.dt, 4, sv, NULL);
        vkla_lion_args a = {0};
        a.q = q.t; a.k = k.t; a.v = v.t; a.o = o.t;
        if (d.g) { th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g); a.g = g.t; }
        if (d.gamma) { th_tensor_new(&gamma, VKLA_DTYPE_F32, 1, sgam, d.gamma); a.g_gamma = gamma.t; }
        a.normalize = c.normalize;
        a.chunk_size = c.chunk;
        uint64_t full = 0;
        assert_int_equal(vkla_lion_scratch_size(ctx, &a, &full), VKLA_SUCCESS);
        int ran = 0;
        for (int fi = 0; fi < 3; fi++) {
            uint64_t limit = (uint64_t)(full * fractions[fi]);
            if (limit < 4096)
                continue;
            assert_int_equal(vkla_context_set_scratch_limit(ctx, limit), VKLA_SUCCESS);
            uint64_t need = 0;
            vkla_result r = vkla_lion_scratch_size(ctx, &a, &need);
            char name[96];
            snprintf(name, sizeof(name), "pieces B=%u T=%u H=%u K=%u V=%u g%d n%d %s C=%u, "
                     "limit %.2f", c.B, c.T, c.H, c.K, c.V, c.gates, c.normalize,
                     vkla_dtype_name(c.dt), c.chunk, fractions[fi]);
            if (r == VKLA_ERROR_UNSUPPORTED) { /* the slots alone leave no room */
                if (!strstr(vkla_last_error(ctx), "no piece"))
                    fail_msg("%s: %s", name, vkla_last_error(ctx));
                assert_int_equal(vkla_lion_run(ctx, &a), VKLA_ERROR_UNSUPPORTED);
                continue;
            }
            if (r != VKLA_SUCCESS || need > limit || need == 0)
                fail_msg("%s: scratch %llu for a limit of %llu (%s)", name,
                         (unsigned long long)need, (unsigned long long)limit,
                         vkla_last_error(ctx));
            /* the caller's scratch of exactly that size, then the context's own */
            vkla_buffer *scr;
            assert_int_equal(vkla_buffer_create(ctx, need + 256, &scr), VKLA_SUCCESS);
            assert_int_equal(vkla_buffer_fill(ctx, scr, 0, need + 256, 0x7fc00000u), VKLA_SUCCESS);
            for (int own = 0; own < 2; own++) {
                a.scratch = own ? NULL : scr;
                a.scratch_offset = own ? 0 : 256;
                assert_int_equal(vkla_buffer_fill(ctx, o.t.buffer, o.t.offset,
                                                  d.nv * vkla_dtype_size(c.dt), 0),
                                 VKLA_SUCCESS);
                if ((r = vkla_lion_run(ctx, &a)) != VKLA_SUCCESS)
                    fail_msg("%s: %s: %s", name, vkla_result_string(r), vkla_last_error(ctx));
                float *out = malloc(d.nv * sizeof(float));
                th_tensor_read(&o, out);
                th_assert_close(name, d.o, out, d.nv, th_target(d.o, d.nv, c.dt));
                free(out);
            }
            a.scratch = NULL;
            a.scratch_offset = 0;
            vkla_buffer_destroy(ctx, scr);
            ran++;
        }
        if (!ran)
            fail_msg("pieces T=%u: no limit below the call's own need could split it", c.T);
        assert_int_equal(vkla_context_set_scratch_limit(ctx, 0), VKLA_SUCCESS);
        unsetenv("VKLA_LION_BLOCK");
        th_tensor *all[] = {&q, &k, &v, &o, &g, &gamma};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
            th_tensor_free(all[i]);
        free_data(&d);
        th_check_validation();
    }

    /* q, k, v as views of one buffer with 256 KiB between tokens: one (sequence, head) slab of
     * 520 tokens spans 130 MiB, beyond lavapipe's 128 MiB maxStorageBufferRange; every form
     * (the attn and rnn forms run their pieces in the chunk form) */
    {
        lion_case c = {.B = 1, .T = 520, .H = 1, .K = 16, .V = 16, .gates = G,
                       .dt = VKLA_DTYPE_F32, .form = VKLA_FORM_CHUNK, .seed = 910};
        lion_data d;
        make_data(&c, &d);
        uint64_t sq[4] = {1, c.T, 1, 16}, sg[3] = {1, c.T, 1};
        th_tensor o, g;
        th_tensor_new(&o, VKLA_DTYPE_F32, 4, sq, NULL);
        th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, d.g);
        vkla_lion_args a = {0};
        vkla_tensor qkv[3];
        const double *rows[3] = {d.q, d.k, d.v};
        vkla_buffer *fb = th_spread_views(c.T, 16, 65536, 3, rows, qkv);
        a.q = qkv[0];
        a.k = qkv[1];
        a.v = qkv[2];
        a.o = o.t;
        a.g = g.t;
        for (int f = 0; f < 3; f++) {
            a.form = forms[f];
            assert_int_equal(vkla_buffer_fill(ctx, o.t.buffer, o.t.offset, d.nv * 4, 0),
                             VKLA_SUCCESS);
            vkla_result r = vkla_lion_run(ctx, &a);
            if (r != VKLA_SUCCESS)
                fail_msg("slab beyond the range, %s: %s: %s", form_name(forms[f]),
                         vkla_result_string(r), vkla_last_error(ctx));
            float *out = malloc(d.nv * sizeof(float));
            th_tensor_read(&o, out);
            char name[64];
            snprintf(name, sizeof(name), "slab beyond the range, %s", form_name(forms[f]));
            th_assert_close(name, d.o, out, d.nv, th_target(d.o, d.nv, c.dt));
            free(out);
        }
        th_tensor_free(&o);
        th_tensor_free(&g);
        vkla_buffer_destroy(ctx, fb);
        free_data(&d);
        th_check_validation();
    }
}

/* the 8 x 8 lane blocks vkla uses on GPUs, forced on this device */
static void test_gpu_blocks(void **state)
{
    (void)state;
    setenv("VKLA_LION_BLOCK", "8", 1);
    static const int32_t cu[] = {0, 70, 71, 200};
    for (int f = 0; f < 3; f++) {
        lion_case c = {.B = 1, .T = 200, .H = 2, .K = 72, .V = 40, .gates = G | GAMMA,
                       .normalize = f == 1, .dt = VKLA_DTYPE_F32, .form = forms[f], .cu = cu,
                       .N = 3, .chunk = f == 0 ? 16 : 0, .gmin = -0.2, .seed = 1000 + f};
        char name[64];
        snprintf(name, sizeof(name), "8x8 blocks %s", form_name(forms[f]));
        run_case(name, &c);
    }
    unsetenv("VKLA_LION_BLOCK");
}

static void expect(vkla_result got, vkla_result want, const char *what)
{
    if (got != want)
        fail_msg("%s: got %s, want %s (%s)", what, vkla_result_string(got),
                 vkla_result_string(want), vkla_last_error(th_ctx()));
    if (want != VKLA_SUCCESS && want != VKLA_ERROR_NULL_POINTER && vkla_last_error(th_ctx())[0] == 0)
        fail_msg("%s: no error message", what);
}

static void test_errors(void **state)
{
    (void)state;
    const uint32_t B = 1, T = 20, H = 2, K = 16, V = 16;
    uint64_t sq[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[3] = {B, T, H}, sgam[1] = {H};
    uint64_t sbad[4] = {B, T + 1, H, K}, sbig[4] = {B, T, H, 260};
    th_tensor q, k, v, o, k16, g, gamma, g16, gbad, qbig, kbig;
    double *zeros = calloc((size_t)B * (T + 1) * H * 260, sizeof(double));
    th_tensor_new(&q, VKLA_DTYPE_F32, 4, sq, zeros);
    th_tensor_new(&k, VKLA_DTYPE_F32, 4, sq, zeros);
    th_tensor_new(&v, VKLA_DTYPE_F32, 4, sv, zeros);
    th_tensor_new(&o, VKLA_DTYPE_F32, 4, sv, NULL);
    th_tensor_new(&k16, VKLA_DTYPE_F16, 4, sq, zeros);
    th_tensor_new(&g, VKLA_DTYPE_F32, 3, sg, zeros);
    th_tensor_new(&gamma, VKLA_DTYPE_F32, 1, sgam, zeros);
    th_tensor_new(&g16, VKLA_DTYPE_F16, 3, sg, zeros);
    th_tensor_new(&gbad, VKLA_DTYPE_F32, 4, sbad, zeros);
    th_tensor_new(&qbig, VKLA_DTYPE_F32, 4, sbig, zeros);
    th_tensor_new(&kbig, VKLA_DTYPE_F32, 4, sbig, zeros);
    free(zeros);
    vkla_context *ctx = th_ctx();
    vkla_lion_args ok = {0};
    ok.q = q.t; ok.k = k.t; ok.v = v.t; ok.o = o.t;
    vkla_lion_args a;

    expect(vkla_lion_run(NULL, &ok), VKLA_ERROR_NULL_POINTER, "NULL context");
    expect(vkla_lion_run(ctx, NULL), VKLA_ERROR_NULL_POINTER, "NULL args");
    a = ok; a.q.buffer = NULL;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_NULL_POINTER, "missing q");
    a = ok; a.o.buffer = NULL;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_NULL_POINTER, "missing o");
    a = ok; a.k = gbad.t;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "k with another T");
    a = ok; a.v.shape[2] = H + 1;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "v with another H");
    a = ok; a.o.shape[3] = V + 4;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "o with another V");
    a = ok; a.k = k16.t;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_DTYPE_MISMATCH, "k f16, q f32");
    a = ok; a.q = qbig.t; a.k = kbig.t;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_UNSUPPORTED, "K = 260");
    a = ok; a.g = g16.t;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_DTYPE_MISMATCH, "g f16");
    a = ok; a.g = gbad.t;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "g of rank 4");
    a = ok; a.g_gamma = g.t;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_SHAPE_MISMATCH, "g_gamma of rank 3");
    a = ok; a.form = VKLA_FORM_RECURRENT;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "recurrent form");
    a = ok; a.form = (vkla_form)42;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "unknown form");
    a = ok; a.chunk_size = 48;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "chunk size 48");
    a = ok; a.eps = -1.0f;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "negative eps");
    a = ok; a.scale = NAN;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_INVALID_ARGUMENT, "NaN scale");

    static const int32_t cu_end[] = {0, 5, 19};
    static const int32_t cu_dec[] = {0, 12, 8, 20};
    static const int32_t cu_start[] = {1, 20};
    a = ok; a.cu_seqlens = cu_end; a.num_seqs = 2;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_BAD_SEQLENS, "cu_seqlens not ending at T");
    a = ok; a.cu_seqlens = cu_dec; a.num_seqs = 3;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_BAD_SEQLENS, "cu_seqlens decreasing");
    a = ok; a.cu_seqlens = cu_start; a.num_seqs = 1;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_BAD_SEQLENS, "cu_seqlens not starting at 0");
    a = ok; a.cu_seqlens = cu_end; a.num_seqs = 0;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_BAD_SEQLENS, "cu_seqlens with num_seqs 0");
    a = ok; a.num_seqs = 3;
    expect(vkla_lion_run(ctx, &a), VKLA_ERROR_BAD_SEQLENS, "num_seqs without cu_seqlens");

    /* recording needs a caller scratch whenever the size query says so (the chunk form's
     * kernels; the short-sequence path this shape takes by default needs none) */
    a = ok; a.form = VKLA_FORM_CHUNK;
    uint64_t need = 1;
    expect(vkla_lion_scratch_size(ctx, &a, &need), VKLA_SUCCESS, "scratch size, short path");
    assert_true(need == 0);
    setenv("VKLA_LION_SHORT", "0", 1);
    expect(vkla_lion_scratch_size(ctx, &a, &need), VKLA_SUCCESS, "scratch size");
    assert_true(need > 0);
    expect(vkla_lion_scratch_size(ctx, &a, NULL), VKLA_ERROR_NULL_POINTER, "scratch size NULL");
    expect(vkla_lion_record(ctx, VK_NULL_HANDLE, &a), VKLA_ERROR_NULL_POINTER, "NULL command buffer");
    unsetenv("VKLA_LION_SHORT");
    a = ok; a.form = VKLA_FORM_ATTN;
    expect(vkla_lion_scratch_size(ctx, &a, &need), VKLA_SUCCESS, "attn scratch size");
    assert_true(need == 0); /* f32 aligned rows, no varlen: nothing to stage */

    /* g and g_gamma together are allowed: the decays add up */
    a = ok; a.g = g.t; a.g_gamma = gamma.t;
    expect(vkla_lion_run(ctx, &a), VKLA_SUCCESS, "g with g_gamma");
    double db = 0;
    expect(vkla_lion_bench(ctx, &a, 0, 0, &db), VKLA_ERROR_INVALID_ARGUMENT, "bench with 0 reps");

    th_tensor *all[] = {&q, &k, &v, &o, &k16, &g, &gamma, &g16, &gbad, &qbig, &kbig};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
    th_check_validation();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_forms_variants_dtypes),
        cmocka_unit_test(test_forms_agree),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_head_dims),
        cmocka_unit_test(test_varlen),
        cmocka_unit_test(test_strong_and_no_decay),
        cmocka_unit_test(test_weak_decay_long),
        cmocka_unit_test(test_zero_keys),
        cmocka_unit_test(test_chunk_sizes),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_caller_scratch),
        cmocka_unit_test(test_short_path),
        cmocka_unit_test(test_gpu_blocks),
        cmocka_unit_test(test_long_pieces),
    };
    return cmocka_run_group_tests_name("lion", tests, th_setup, th_teardown);
}
