/* A minimal vkla application: create a context, print the device, run a tiny linear_attn and
 * check one value. With CONSUMER_WITH_VOLK it also uses its own volk (linked next to
 * vkla_static) before and after vkla. */
#ifdef CONSUMER_WITH_VOLK
#include <volk.h>
#endif
#include <vkla.h>

#include <math.h>
#include <stdio.h>

static int fail(vkla_context *ctx, const char *what, vkla_result r)
{
    fprintf(stderr, "consumer: %s: %s: %s\n", what, vkla_result_string(r), vkla_last_error(ctx));
    return 1;
}

int main(void)
{
#ifdef CONSUMER_WITH_VOLK
    /* vkla must not have touched the application's volk globals */
    if (vkGetInstanceProcAddr != NULL || vkCreateInstance != NULL) {
        fprintf(stderr, "consumer: volk globals set before volkInitialize\n");
        return 1;
    }
#endif
    vkla_context *ctx = NULL;
    vkla_result r = vkla_context_create(NULL, &ctx);
    if (r != VKLA_SUCCESS)
        return fail(NULL, "vkla_context_create", r);
    vkla_device_info info;
    vkla_context_device_info(ctx, &info);
    printf("device: %s (%s)\n", info.name, info.variant);

    /* K = V = H = B = 1, T = 2, no gates, scale 1: o_t = (sum_{s<=t} k_s v_s) q_t */
    const float q[2] = {1.0f, 2.0f}, k[2] = {3.0f, 4.0f}, v[2] = {5.0f, 6.0f};
    vkla_buffer *buf = NULL;
    if ((r = vkla_buffer_create(ctx, 256, &buf)) != VKLA_SUCCESS)
        return fail(ctx, "vkla_buffer_create", r);
    if ((r = vkla_buffer_upload(ctx, buf, 0, q, 8)) != VKLA_SUCCESS ||
        (r = vkla_buffer_upload(ctx, buf, 64, k, 8)) != VKLA_SUCCESS ||
        (r = vkla_buffer_upload(ctx, buf, 128, v, 8)) != VKLA_SUCCESS)
        return fail(ctx, "vkla_buffer_upload", r);
    const uint64_t shape[4] = {1, 2, 1, 1};
    vkla_linear_attn_args a = {0};
    a.form = VKLA_FORM_RECURRENT;
    a.q = vkla_tensor_make(buf, 0, VKLA_DTYPE_F32, 4, shape);
    a.k = vkla_tensor_make(buf, 64, VKLA_DTYPE_F32, 4, shape);
    a.v = vkla_tensor_make(buf, 128, VKLA_DTYPE_F32, 4, shape);
    a.o = vkla_tensor_make(buf, 192, VKLA_DTYPE_F32, 4, shape);
    a.scale = 1.0f;
    if ((r = vkla_linear_attn_run(ctx, &a)) != VKLA_SUCCESS)
        return fail(ctx, "vkla_linear_attn_run", r);
    float o[2] = {0, 0};
    if ((r = vkla_buffer_download(ctx, buf, 192, o, 8)) != VKLA_SUCCESS)
        return fail(ctx, "vkla_buffer_download", r);
    /* o_1 = 3*5*1 = 15, o_2 = (15 + 4*6) * 2 = 78 */
    if (fabsf(o[0] - 15.0f) > 1e-4f || fabsf(o[1] - 78.0f) > 1e-4f) {
        fprintf(stderr, "consumer: o = [%g, %g], expected [15, 78]\n", o[0], o[1]);
        return 1;
    }
    printf("o[1] = %g (expected 78)\n", o[1]);
    vkla_buffer_destroy(ctx, buf);
    vkla_context_destroy(ctx);

#ifdef CONSUMER_WITH_VOLK
    /* the application's own volk works, independently of vkla */
    if (volkInitialize() != VK_SUCCESS || vkGetInstanceProcAddr == NULL) {
        fprintf(stderr, "consumer: volkInitialize failed\n");
        return 1;
    }
    uint32_t ver = volkGetInstanceVersion();
    if (ver < VK_API_VERSION_1_1) {
        fprintf(stderr, "consumer: volk reports instance version %u\n", ver);
        return 1;
    }
    printf("app volk: instance version %u.%u\n", VK_API_VERSION_MAJOR(ver), VK_API_VERSION_MINOR(ver));
#endif
    printf("consumer ok\n");
    return 0;
}
