#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vkla_context *g_ctx;
static uint32_t g_seen;

static void on_message(void *user, vkla_message_severity sev, const char *text)
{
    (void)user;
    if (sev == VKLA_MESSAGE_VALIDATION || sev == VKLA_MESSAGE_WARNING)
        fprintf(stderr, "[vkla %s] %s\n", sev == VKLA_MESSAGE_VALIDATION ? "validation" : "warning", text);
}

vkla_context *th_ctx(void) { return g_ctx; }

int th_setup(void **state)
{
    (void)state;
    vkla_context_desc d = {0};
    d.validation = 1;
    d.sync_validation = 1;
    d.message_fn = on_message;
    vkla_result r = vkla_context_create(&d, &g_ctx);
    if (r != VKLA_SUCCESS) {
        fprintf(stderr, "context creation failed: %s\n", vkla_result_string(r));
        return -1;
    }
    vkla_device_info info;
    vkla_context_device_info(g_ctx, &info);
    fprintf(stderr, "device: %s, variant: %s\n", info.name, info.variant);
    g_seen = 0;
    return 0;
}

int th_teardown(void **state)
{
    (void)state;
    uint32_t n = vkla_validation_message_count(g_ctx);
    vkla_context_destroy(g_ctx);
    g_ctx = NULL;
    if (n != g_seen) {
        fprintf(stderr, "%u validation messages\n", n - g_seen);
        return -1;
    }
    return 0;
}

void th_check_validation(void)
{
    uint32_t n = vkla_validation_message_count(g_ctx);
    uint32_t fresh = n - g_seen;
    g_seen = n;
    if (fresh)
        fail_msg("%u Vulkan validation message(s) (see stderr)", fresh);
}

void th_seed(th_rng *r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull; }

static uint64_t next(th_rng *r)
{
    uint64_t x = r->s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->s = x;
    return x;
}

double th_uniform(th_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * ((double)(next(r) >> 11) / 9007199254740992.0);
}

th_shape th_draw_shape(th_rng *r, double b_hi, double t_lo, double t_hi, double h_hi)
{
    static const vkla_dtype dts[3] = {VKLA_DTYPE_F32, VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    th_shape s;
    s.B = 1 + (uint32_t)th_uniform(r, 0, b_hi);
    s.T = (uint32_t)th_uniform(r, t_lo, t_hi);
    s.H = 1 + (uint32_t)th_uniform(r, 0, h_hi);
    s.K = 1 + (uint32_t)th_uniform(r, 0, 69.99);
    s.V = 1 + (uint32_t)th_uniform(r, 0, 69.99);
    s.opts = (int)th_uniform(r, 0, 3.99);
    s.normalize = th_uniform(r, 0, 1) < 0.5;
    s.dt = dts[(int)th_uniform(r, 0, 2.99)];
    return s;
}

double th_normal(th_rng *r)
{
    double u1 = th_uniform(r, 1e-12, 1.0), u2 = th_uniform(r, 0.0, 1.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void th_fill_uniform(th_rng *r, double *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = th_uniform(r, lo, hi);
}

void th_fill_normal(th_rng *r, double *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * th_normal(r);
}

void th_unit_rows(double *x, size_t rows, size_t d)
{
    for (size_t i = 0; i < rows; i++) {
        double s = 0;
        for (size_t j = 0; j < d; j++)
            s += x[i * d + j] * x[i * d + j];
        s = s > 0 ? 1.0 / sqrt(s) : 0;
        for (size_t j = 0; j < d; j++)
            x[i * d + j] *= s;
    }
}

void th_round(double *x, size_t n, vkla_dtype dt)
{
    if (dt == VKLA_DTYPE_F32) {
        for (size_t i = 0; i < n; i++)
            x[i] = (float)x[i];
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float f = (float)x[i];
        uint16_t h;
        vkla_convert(&h, dt, &f, VKLA_DTYPE_F32, 1);
        vkla_convert(&f, VKLA_DTYPE_F32, &h, dt, 1);
        x[i] = f;
    }
}

size_t th_count(uint32_t ndim, const uint64_t *shape)
{
    size_t n = 1;
    for (uint32_t i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

static const uint32_t GUARD_WORD = 0xA5C3F00Du;

void th_tensor_new(th_tensor *tt, vkla_dtype dt, uint32_t ndim, const uint64_t *shape,
                   const double *data)
{
    memset(tt, 0, sizeof(*tt));
    size_t n = th_count(ndim, shape);
    size_t es = vkla_dtype_size(dt);
    tt->bytes = (n * es + 3) / 4 * 4;
    uint64_t total = TH_GUARD + tt->bytes + TH_GUARD;
    assert_int_equal(vkla_buffer_create(th_ctx(), total, &tt->buf), VKLA_SUCCESS);
    uint8_t *host = malloc(total);
    assert_non_null(host);
    for (uint64_t i = 0; i < total / 4; i++)
        memcpy(host + 4 * i, &GUARD_WORD, 4);
    if (data) {
        if (dt == VKLA_DTYPE_I32) {
            for (size_t i = 0; i < n; i++) {
                int32_t v = (int32_t)data[i];
                memcpy(host + TH_GUARD + 4 * i, &v, 4);
            }
        } else {
            float *f = malloc(n * sizeof(float) + 4);
            for (size_t i = 0; i < n; i++)
                f[i] = (float)data[i];
            vkla_convert(host + TH_GUARD, dt, f, VKLA_DTYPE_F32, n);
            free(f);
        }
    } else {
        /* outputs start as NaN-ish garbage so unwritten elements are caught (and the padding
         * after an odd count of 16-bit elements as th_tensor_read expects it) */
        memset(host + TH_GUARD, 0x7f, tt->bytes);
    }
    assert_int_equal(vkla_buffer_upload(th_ctx(), tt->buf, 0, host, total), VKLA_SUCCESS);
    free(host);
    tt->t = vkla_tensor_make(tt->buf, TH_GUARD, dt, ndim, shape);
}

void th_tensor_read(th_tensor *tt, float *out)
{
    uint64_t total = TH_GUARD + tt->bytes + TH_GUARD;
    uint8_t *host = malloc(total);
    assert_non_null(host);
    assert_int_equal(vkla_buffer_download(th_ctx(), tt->buf, 0, host, total), VKLA_SUCCESS);
    size_t n = th_count(tt->t.ndim, tt->t.shape);
    size_t es = vkla_dtype_size(tt->t.dtype);
    for (uint64_t i = 0; i < TH_GUARD / 4; i++) {
        uint32_t w1, w2;
        memcpy(&w1, host + 4 * i, 4);
        memcpy(&w2, host + TH_GUARD + tt->bytes + 4 * i, 4);
        if (w1 != GUARD_WORD || w2 != GUARD_WORD)
            fail_msg("guard region overwritten around a %zu-element output", n);
    }
    /* padding after a 16-bit tensor with an odd count */
    if (n * es < tt->bytes) {
        uint16_t pad, want;
        memcpy(&pad, host + TH_GUARD + n * es, 2);
        memset(&want, 0x7f, 2);
        if (pad != want)
            fail_msg("write past the end of a %zu-element 16-bit output", n);
    }
    if (out)
        vkla_convert(out, VKLA_DTYPE_F32, host + TH_GUARD, tt->t.dtype, n);
    free(host);
}

vkla_buffer *th_spread_views(uint32_t T, uint32_t X, uint64_t stride, int n,
                             const double *const *rows, vkla_tensor *views)
{
    vkla_buffer *buf;
    assert_int_equal(vkla_buffer_create(th_ctx(), T * stride * 4, &buf), VKLA_SUCCESS);
    float *row = calloc((size_t)n * X, sizeof(float));
    assert_non_null(row);
    for (uint32_t t = 0; t < T; t++) {
        for (int i = 0; i < n; i++)
            for (uint32_t x = 0; x < X; x++)
                row[(size_t)i * X + x] = (float)rows[i][(size_t)t * X + x];
        assert_int_equal(vkla_buffer_upload(th_ctx(), buf, t * stride * 4, row,
                                            (uint64_t)n * X * 4),
                         VKLA_SUCCESS);
    }
    free(row);
    const uint64_t shape[4] = {1, T, 1, X}, st[4] = {T * stride, stride, X, 1};
    for (int i = 0; i < n; i++) {
        views[i] = vkla_tensor_make(buf, (uint64_t)i * X * 4, VKLA_DTYPE_F32, 4, shape);
        memcpy(views[i].strides, st, sizeof(st));
    }
    return buf;
}

void th_tensor_free(th_tensor *tt)
{
    if (tt->buf)
        vkla_buffer_destroy(th_ctx(), tt->buf);
    memset(tt, 0, sizeof(*tt));
}

double th_target(const double *ref, size_t n, vkla_dtype dt)
{
    if (dt == VKLA_DTYPE_F32)
        return 1e-9;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double x = ref[i];
        th_round(&x, 1, dt);
        num += (x - ref[i]) * (x - ref[i]);
        den += ref[i] * ref[i];
    }
    double e = den > 0 ? num / den : num;
    return 10.0 * (e > 1e-12 ? e : 1e-12);
}

void th_assert_close(const char *what, const double *ref, const float *out, size_t n,
                     double target)
{
    if (!vkla_ref_all_finite(out, n))
        fail_msg("%s: output has NaN or Inf", what);
    double e = vkla_ref_nmse(ref, out, n);
    if (!(e <= target)) {
        size_t worst = 0;
        double wd = -1;
        for (size_t i = 0; i < n; i++) {
            double d = fabs(ref[i] - out[i]);
            if (d > wd) { wd = d; worst = i; }
        }
        fail_msg("%s: NMSE %.3e > target %.3e (worst at %zu: ref %.6g got %.6g)", what, e, target,
                 worst, ref[worst], (double)out[worst]);
    }
}
