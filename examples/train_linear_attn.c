/*
 * A training loop in C: one gated linear-attention layer (RetNet-style, a learned log decay per
 * head) learns to imitate a teacher layer of the same shape on random inputs.
 *
 *   q = Wq x,  k = Wk x,  v = Wv x,  g_gamma[h] = -softplus(theta[h]),
 *   o = linear_attn(q, k, v, g_gamma),  loss = 0.5 * mean((o - o_teacher)^2)
 *
 * Every step runs the attention's forward and backward pass on the device
 * (vkla_linear_attn_run, then vkla_linear_attn_backward_run with the same args in .fwd); the
 * projections, their gradients and Adam run on the host. Prints the loss as it falls; exits 0
 * when the last steps' loss is below 5% of the first's.
 *
 *   vkla-example-train [steps] [learning rate]      (default 300, 0.05; linear decay to 0)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vkla.h>

enum { B = 8, T = 64, H = 2, K = 16, V = 16, D = 16, HK = H * K, HV = H * V };

typedef struct layer {
    float wq[HK * D], wk[HK * D], wv[HV * D], theta[H];
} layer;

#define NPARAM (2 * HK * D + HV * D + H)

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float randn(void)
{
    double u1, u2;
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    u1 = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    u2 = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void init_layer(layer *l, float decay0, float decay1)
{
    float s = 1.0f / sqrtf((float)D);
    for (int i = 0; i < HK * D; i++) {
        l->wq[i] = s * randn();
        l->wk[i] = s * randn();
    }
    for (int i = 0; i < HV * D; i++)
        l->wv[i] = s * randn();
    /* softplus(theta) = -log(decay) */
    l->theta[0] = logf(expf(-logf(decay0)) - 1.0f);
    l->theta[1] = logf(expf(-logf(decay1)) - 1.0f);
}

/* y[r, o] = sum_d w[o, d] x[r, d] for r < rows */
static void project(const float *w, int outs, const float *x, int rows, float *y)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < outs; o++) {
            float acc = 0;
            for (int d = 0; d < D; d++)
                acc += w[o * D + d] * x[r * D + d];
            y[r * outs + o] = acc;
        }
}

/* dw[o, d] = sum_r dy[r, o] x[r, d] */
static void project_grad(const float *dy, int outs, const float *x, int rows, float *dw)
{
    memset(dw, 0, sizeof(float) * (size_t)outs * D);
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < outs; o++)
            for (int d = 0; d < D; d++)
                dw[o * D + d] += dy[r * outs + o] * x[r * D + d];
}

static float softplus(float x) { return x > 20 ? x : log1pf(expf(x)); }
static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Device side of one layer call: q k v g_gamma o and the gradients, f32. */
typedef struct dev {
    vkla_buffer *q, *k, *v, *gam, *o, *dout, *dq, *dk, *dv, *dgam;
} dev;

static int check(vkla_context *ctx, vkla_result r, const char *what)
{
    if (r == VKLA_SUCCESS)
        return 0;
    fprintf(stderr, "%s: %s: %s\n", what, vkla_result_string(r), vkla_last_error(ctx));
    return -1;
}

/* uploads the layer's q, k, v and decay for inputs x, runs the forward, downloads o */
static int forward(vkla_context *ctx, const dev *d, vkla_linear_attn_args *a, const layer *l,
                   const float *x, float *q, float *k, float *v, float *o)
{
    float gam[H];
    project(l->wq, HK, x, B * T, q);
    project(l->wk, HK, x, B * T, k);
    project(l->wv, HV, x, B * T, v);
    for (int h = 0; h < H; h++)
        gam[h] = -softplus(l->theta[h]);
    if (check(ctx, vkla_buffer_upload(ctx, d->q, 0, q, sizeof(float) * B * T * HK), "upload") ||
        check(ctx, vkla_buffer_upload(ctx, d->k, 0, k, sizeof(float) * B * T * HK), "upload") ||
        check(ctx, vkla_buffer_upload(ctx, d->v, 0, v, sizeof(float) * B * T * HV), "upload") ||
        check(ctx, vkla_buffer_upload(ctx, d->gam, 0, gam, sizeof gam), "upload") ||
        check(ctx, vkla_linear_attn_run(ctx, a), "linear_attn") ||
        check(ctx, vkla_buffer_download(ctx, d->o, 0, o, sizeof(float) * B * T * HV), "download"))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 300;
    float lr0 = argc > 2 ? (float)atof(argv[2]) : 0.05f;
    if (steps < 1 || !(lr0 > 0)) {
        fprintf(stderr, "usage: %s [steps >= 1] [learning rate > 0]\n", argv[0]);
        return 2;
    }
    vkla_context *ctx;
    vkla_context_desc desc = {0};
    if (vkla_context_create(&desc, &ctx) != VKLA_SUCCESS) {
        fprintf(stderr, "vkla: no Vulkan device\n");
        return 1;
    }
    vkla_device_info info;
    vkla_context_device_info(ctx, &info);
    printf("device: %s\n", info.name);

    const uint64_t sqk[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sh[1] = {H};
    dev d;
    vkla_buffer **bufs[] = {&d.q, &d.k, &d.v, &d.gam, &d.o, &d.dout, &d.dq, &d.dk, &d.dv, &d.dgam};
    const uint64_t sizes[] = {B * T * HK, B * T * HK, B * T * HV, H, B * T * HV,
                              B * T * HV, B * T * HK, B * T * HK, B * T * HV, H};
    for (int i = 0; i < 10; i++)
        if (check(ctx, vkla_buffer_create(ctx, sizes[i] * sizeof(float), bufs[i]), "buffer"))
            return 1;

    /* forward args; the backward args hold them unchanged in .fwd */
    vkla_linear_attn_backward_args ba = {0};
    vkla_linear_attn_args *a = &ba.fwd;
    a->q = vkla_tensor_make(d.q, 0, VKLA_DTYPE_F32, 4, sqk);
    a->k = vkla_tensor_make(d.k, 0, VKLA_DTYPE_F32, 4, sqk);
    a->v = vkla_tensor_make(d.v, 0, VKLA_DTYPE_F32, 4, sv);
    a->o = vkla_tensor_make(d.o, 0, VKLA_DTYPE_F32, 4, sv);
    a->g_gamma = vkla_tensor_make(d.gam, 0, VKLA_DTYPE_F32, 1, sh);
    a->chunk_size = 32;
    ba.dout = vkla_tensor_make(d.dout, 0, VKLA_DTYPE_F32, 4, sv);
    ba.dq = vkla_tensor_make(d.dq, 0, VKLA_DTYPE_F32, 4, sqk);
    ba.dk = vkla_tensor_make(d.dk, 0, VKLA_DTYPE_F32, 4, sqk);
    ba.dv = vkla_tensor_make(d.dv, 0, VKLA_DTYPE_F32, 4, sv);
    ba.dg_gamma = vkla_tensor_make(d.dgam, 0, VKLA_DTYPE_F32, 1, sh);

    static layer teacher, student, grad, m1, m2;
    init_layer(&teacher, 0.9f, 0.98f);
    init_layer(&student, 0.5f, 0.6f);
    static float x[B * T * D], q[B * T * HK], k[B * T * HK], v[B * T * HV], o[B * T * HV],
        target[B * T * HV], dout[B * T * HV], dq[B * T * HK], dk[B * T * HK], dv[B * T * HV];
    const float b1 = 0.9f, b2 = 0.999f;
    double first = 0, last = 0;
    int rc = 1;
    for (int step = 1; step <= steps; step++) {
        for (int i = 0; i < B * T * D; i++)
            x[i] = randn();
        /* the teacher's output is the target */
        if (forward(ctx, &d, a, &teacher, x, q, k, v, target) ||
            forward(ctx, &d, a, &student, x, q, k, v, o))
            goto done;
        double loss = 0;
        const int n = B * T * HV;
        for (int i = 0; i < n; i++) {
            float e = o[i] - target[i];
            loss += 0.5 * (double)e * e / n;
            dout[i] = e / (float)n;
        }
        /* backward on the device: q k v g_gamma are still the student's */
        float dgam[H];
        if (check(ctx, vkla_buffer_upload(ctx, d.dout, 0, dout, sizeof dout), "upload") ||
            check(ctx, vkla_linear_attn_backward_run(ctx, &ba), "linear_attn_backward") ||
            check(ctx, vkla_buffer_download(ctx, d.dq, 0, dq, sizeof dq), "download") ||
            check(ctx, vkla_buffer_download(ctx, d.dk, 0, dk, sizeof dk), "download") ||
            check(ctx, vkla_buffer_download(ctx, d.dv, 0, dv, sizeof dv), "download") ||
            check(ctx, vkla_buffer_download(ctx, d.dgam, 0, dgam, sizeof dgam), "download"))
            goto done;
        project_grad(dq, HK, x, B * T, grad.wq);
        project_grad(dk, HK, x, B * T, grad.wk);
        project_grad(dv, HV, x, B * T, grad.wv);
        for (int h = 0; h < H; h++) /* g_gamma = -softplus(theta) */
            grad.theta[h] = -dgam[h] * sigmoid(student.theta[h]);
        /* Adam */
        float *p = (float *)&student, *g = (float *)&grad, *mm = (float *)&m1, *vv = (float *)&m2;
        float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);
        float lr = lr0 * (1.0f - (float)(step - 1) / (float)steps);
        for (int i = 0; i < NPARAM; i++) {
            mm[i] = b1 * mm[i] + (1 - b1) * g[i];
            vv[i] = b2 * vv[i] + (1 - b2) * g[i] * g[i];
            p[i] -= lr * (mm[i] / c1) / (sqrtf(vv[i] / c2) + 1e-8f);
        }
        if (step == 1)
            first = loss;
        last = step > steps - 10 ? last + loss / (steps < 10 ? steps : 10) : 0;
        if (step == 1 || step % 50 == 0 || step == steps)
            printf("step %4d  loss %.6f  decays %.3f %.3f (teacher 0.900 0.980)\n", step, loss,
                   expf(-softplus(student.theta[0])), expf(-softplus(student.theta[1])));
    }
    printf("loss %.6f -> %.6f (%.1f%% of the start)\n", first, last, 100.0 * last / first);
    rc = last < 0.05 * first ? 0 : 1;
done:
    for (int i = 0; i < 10; i++)
        vkla_buffer_destroy(ctx, *bufs[i]);
    vkla_context_destroy(ctx);
    return rc;
}
