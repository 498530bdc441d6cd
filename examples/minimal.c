/* The README's API example: causal linear attention with a g gate on the best device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vkla.h>

int main(void)
{
    enum { B = 1, T = 100, H = 2, K = 16, V = 16 };
    vkla_context *ctx;
    vkla_context_desc desc = {0};                 /* zero = defaults: best device */
    vkla_result r = vkla_context_create(&desc, &ctx);
    if (r != VKLA_SUCCESS) {
        fprintf(stderr, "vkla: %s\n", vkla_result_string(r));
        return 1;
    }
    vkla_device_info info;
    vkla_context_device_info(ctx, &info);
    printf("device: %s (%s)\n", info.name, info.driver_info);

    /* host data */
    static float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], g[B * T * H], o[B * T * H * V];
    for (int i = 0; i < B * T * H * K; i++) {
        q[i] = sinf(0.1f * (float)i);
        k[i] = cosf(0.07f * (float)i) / 4.0f;
    }
    for (int i = 0; i < B * T * H * V; i++)
        v[i] = sinf(0.03f * (float)i);
    for (int i = 0; i < B * T * H; i++)
        g[i] = -0.05f;

    /* device buffers and tensor views */
    const uint64_t sqk[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[3] = {B, T, H};
    vkla_buffer *bq, *bk, *bv, *bg, *bo;
    vkla_buffer_create(ctx, sizeof q, &bq);
    vkla_buffer_create(ctx, sizeof k, &bk);
    vkla_buffer_create(ctx, sizeof v, &bv);
    vkla_buffer_create(ctx, sizeof g, &bg);
    vkla_buffer_create(ctx, sizeof o, &bo);
    vkla_buffer_upload(ctx, bq, 0, q, sizeof q);
    vkla_buffer_upload(ctx, bk, 0, k, sizeof k);
    vkla_buffer_upload(ctx, bv, 0, v, sizeof v);
    vkla_buffer_upload(ctx, bg, 0, g, sizeof g);

    vkla_linear_attn_args a = {0};                /* zero = defaults: chunk form, C = 64 */
    a.q = vkla_tensor_make(bq, 0, VKLA_DTYPE_F32, 4, sqk);
    a.k = vkla_tensor_make(bk, 0, VKLA_DTYPE_F32, 4, sqk);
    a.v = vkla_tensor_make(bv, 0, VKLA_DTYPE_F32, 4, sv);
    a.o = vkla_tensor_make(bo, 0, VKLA_DTYPE_F32, 4, sv);
    a.g = vkla_tensor_make(bg, 0, VKLA_DTYPE_F32, 3, sg);
    r = vkla_linear_attn_run(ctx, &a);            /* records, submits, waits */
    if (r != VKLA_SUCCESS) {
        fprintf(stderr, "vkla: %s: %s\n", vkla_result_string(r), vkla_last_error(ctx));
        return 1;
    }
    vkla_buffer_download(ctx, bo, 0, o, sizeof o);
    printf("o[last token, head 1, column 0] = %f\n", o[((T - 1) * H + 1) * V]);

    vkla_buffer *bufs[] = {bq, bk, bv, bg, bo};
    for (int i = 0; i < 5; i++)
        vkla_buffer_destroy(ctx, bufs[i]);
    vkla_context_destroy(ctx);
    return isfinite(o[((T - 1) * H + 1) * V]) ? 0 : 1;
}
