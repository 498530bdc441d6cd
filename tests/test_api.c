/* API-level tests of the foundation: every error path (result code and message), recording
 * into the caller's command buffer, chunk pass then decode, strided views, buffers larger than
 * maxStorageBufferRange, the pipeline cache, device info and environment overrides.
 *
 * All cases share B/T/H/K/V and gate flags where they can, so that lavapipe compiles few
 * distinct pipelines. */
#include <vulkan/vulkan.h>

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the shared problem size */
enum { PB = 2, PT = 70, PH = 2, PK = 16, PV = 16 };

enum { P_G = 1, P_GK = 2, P_NORM = 4, P_H0 = 8 };

/* A problem: inputs (already rounded to f32) and the float64 reference outputs. */
typedef struct prob {
    uint32_t B, T, H, K, V;
    int flags;
    size_t nq, nv, ng, ns, nz;
    double *q, *k, *v, *g, *gk, *h0, *z0;
    double *o, *ht, *zt;
} prob;

static void prob_init(prob *p, uint32_t B, uint32_t T, uint32_t H, uint32_t K, uint32_t V,
                      int flags, uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->B = B; p->T = T; p->H = H; p->K = K; p->V = V;
    p->flags = flags;
    p->nq = (size_t)B * T * H * K;
    p->nv = (size_t)B * T * H * V;
    p->ng = (size_t)B * T * H;
    p->ns = (size_t)B * H * K * V;
    p->nz = (size_t)B * H * K;
    th_rng r;
    th_seed(&r, seed);
    p->q = malloc(p->nq * 8);
    p->k = malloc(p->nq * 8);
    p->v = malloc(p->nv * 8);
    if (flags & P_NORM) { /* positive feature maps keep q.z away from 0 */
        th_fill_uniform(&r, p->q, p->nq, 0.05, 1.0);
        th_fill_uniform(&r, p->k, p->nq, 0.05, 1.0);
    } else {
        th_fill_normal(&r, p->q, p->nq, 1.0);
        th_fill_normal(&r, p->k, p->nq, 1.0);
        th_unit_rows(p->k, p->nq / K, K);
    }
    th_fill_normal(&r, p->v, p->nv, 1.0);
    th_round(p->q, p->nq, VKLA_DTYPE_F32);
    th_round(p->k, p->nq, VKLA_DTYPE_F32);
    th_round(p->v, p->nv, VKLA_DTYPE_F32);
    if (flags & P_G) {
        p->g = malloc(p->ng * 8);
        th_fill_uniform(&r, p->g, p->ng, -1.0, 0.0);
        th_round(p->g, p->ng, VKLA_DTYPE_F32);
    }
    if (flags & P_GK) {
        p->gk = malloc(p->nq * 8);
        th_fill_uniform(&r, p->gk, p->nq, -1.0, 0.0);
        th_round(p->gk, p->nq, VKLA_DTYPE_F32);
    }
    if (flags & P_H0) {
        p->h0 = malloc(p->ns * 8);
        th_fill_normal(&r, p->h0, p->ns, 0.5);
        th_round(p->h0, p->ns, VKLA_DTYPE_F32);
        if (flags & P_NORM) {
            p->z0 = malloc(p->nz * 8);
            th_fill_uniform(&r, p->z0, p->nz, 0.1, 1.0);
            th_round(p->z0, p->nz, VKLA_DTYPE_F32);
        }
    }
    p->o = malloc(p->nv * 8);
    p->ht = malloc(p->ns * 8);
    p->zt = malloc(p->nz * 8);
}

static void prob_ref(prob *p)
{
    vkla_ref_linear_attn_args ra = {
        .B = (int)p->B, .T = (int)p->T, .H = (int)p->H, .K = (int)p->K, .V = (int)p->V,
        .q = p->q, .k = p->k, .v = p->v, .g = p->g, .gk = p->gk, .h0 = p->h0, .z0 = p->z0,
        .scale = 1.0 / sqrt((double)p->K), .normalize = (p->flags & P_NORM) != 0, .eps = 1e-6,
        .o = p->o, .ht = p->ht, .zt = (p->flags & P_NORM) ? p->zt : NULL};
    assert_int_equal(vkla_ref_linear_attn(&ra), 0);
}

static void prob_free(prob *p)
{
    free(p->q); free(p->k); free(p->v); free(p->g); free(p->gk); free(p->h0); free(p->z0);
    free(p->o); free(p->ht); free(p->zt);
    memset(p, 0, sizeof(*p));
}

/* Device copies of a problem's contiguous tensors (f32, with harness guard regions). */
typedef struct dev {
    th_tensor q, k, v, o, g, gk, h0, ht, z0, zt;
} dev;

static void dev_init(dev *d, const prob *p)
{
    memset(d, 0, sizeof(*d));
    uint64_t sq[4] = {p->B, p->T, p->H, p->K}, sv[4] = {p->B, p->T, p->H, p->V};
    uint64_t sg[3] = {p->B, p->T, p->H};
    uint64_t ss[4] = {p->B, p->H, p->K, p->V}, sz[3] = {p->B, p->H, p->K};
    th_tensor_new(&d->q, VKLA_DTYPE_F32, 4, sq, p->q);
    th_tensor_new(&d->k, VKLA_DTYPE_F32, 4, sq, p->k);
    th_tensor_new(&d->v, VKLA_DTYPE_F32, 4, sv, p->v);
    th_tensor_new(&d->o, VKLA_DTYPE_F32, 4, sv, NULL);
    if (p->g)
        th_tensor_new(&d->g, VKLA_DTYPE_F32, 3, sg, p->g);
    if (p->gk)
        th_tensor_new(&d->gk, VKLA_DTYPE_F32, 4, sq, p->gk);
    if (p->h0)
        th_tensor_new(&d->h0, VKLA_DTYPE_F32, 4, ss, p->h0);
    if (p->z0)
        th_tensor_new(&d->z0, VKLA_DTYPE_F32, 3, sz, p->z0);
    th_tensor_new(&d->ht, VKLA_DTYPE_F32, 4, ss, NULL);
    if (p->flags & P_NORM)
        th_tensor_new(&d->zt, VKLA_DTYPE_F32, 3, sz, NULL);
}

static void dev_free(dev *d)
{
    th_tensor *all[] = {&d->q, &d->k, &d->v, &d->o, &d->g, &d->gk, &d->h0, &d->ht, &d->z0, &d->zt};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        th_tensor_free(all[i]);
}

static vkla_linear_attn_args dev_args(const dev *d, const prob *p, vkla_form form)
{
    vkla_linear_attn_args a;
    memset(&a, 0, sizeof(a));
    a.form = form;
    a.q = d->q.t; a.k = d->k.t; a.v = d->v.t; a.o = d->o.t;
    a.g = d->g.t; a.gk = d->gk.t; a.h0 = d->h0.t; a.ht = d->ht.t;
    a.z0 = d->z0.t; a.zt = d->zt.t;
    a.normalize = (p->flags & P_NORM) != 0;
    return a;
}

/* Reads a contiguous harness tensor (guards checked) and compares with a reference. */
static void check_tensor(const char *what, th_tensor *t, const double *ref, size_t n)
{
    float *out = malloc(n * sizeof(float));
    assert_non_null(out);
    th_tensor_read(t, out);
    th_assert_close(what, ref, out, n, 1e-9);
    free(out);
}

static void run_ok(vkla_context *ctx, const vkla_linear_attn_args *a, const char *what)
{
    vkla_result r = vkla_linear_attn_run(ctx, a);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: %s: %s", what, vkla_result_string(r), vkla_last_error(ctx));
}

/* The word appears in msg, not as part of a longer identifier. */
static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int mentions(const char *msg, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(msg, word); p; p = strstr(p + 1, word))
        if ((p == msg || !is_ident(p[-1])) && !is_ident(p[n]))
            return 1;
    return 0;
}

/* A simple own command pool and buffer on vkla's device (the loader's global functions work
 * on it: dispatchable handles carry their dispatch table). */
typedef struct own_cmd {
    VkDevice dev;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
} own_cmd;

static void own_cmd_init(own_cmd *c, vkla_context *ctx)
{
    memset(c, 0, sizeof(*c));
    c->dev = vkla_context_vk_device(ctx);
    assert_non_null(c->dev);
    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = vkla_context_queue_family(ctx)};
    assert_int_equal(vkCreateCommandPool(c->dev, &pci, NULL, &c->pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = c->pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    assert_int_equal(vkAllocateCommandBuffers(c->dev, &cai, &c->cmd), VK_SUCCESS);
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    assert_int_equal(vkCreateFence(c->dev, &fci, NULL, &c->fence), VK_SUCCESS);
}

static void own_cmd_begin(own_cmd *c)
{
    assert_int_equal(vkResetCommandBuffer(c->cmd, 0), VK_SUCCESS);
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    assert_int_equal(vkBeginCommandBuffer(c->cmd, &bi), VK_SUCCESS);
}

static void barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags sa,
                    VkPipelineStageFlags dst, VkAccessFlags da)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = sa,
                          .dstAccessMask = da};
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* ends, submits to vkla's queue and waits */
static void own_cmd_submit(own_cmd *c, vkla_context *ctx)
{
    assert_int_equal(vkEndCommandBuffer(c->cmd), VK_SUCCESS);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &c->cmd};
    assert_int_equal(vkResetFences(c->dev, 1, &c->fence), VK_SUCCESS);
    assert_int_equal(vkQueueSubmit(vkla_context_vk_queue(ctx), 1, &si, c->fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(c->dev, 1, &c->fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
}

static void own_cmd_free(own_cmd *c)
{
    if (c->fence)
        vkDestroyFence(c->dev, c->fence, NULL);
    if (c->pool)
        vkDestroyCommandPool(c->dev, c->pool, NULL);
    memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------------------------------------ */
/* Error paths                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static own_cmd g_err_cmd;

/* Puts a known, unrelated message in the context so a stale message cannot pass a check. */
static const char *reset_message(vkla_context *ctx)
{
    vkla_buffer *b = NULL;
    assert_int_equal(vkla_buffer_create(ctx, 0, &b), VKLA_ERROR_INVALID_ARGUMENT);
    return vkla_last_error(ctx);
}

static void check_message(const char *what, const char *call, vkla_context *ctx,
                          const char *word)
{
    const char *m = vkla_last_error(ctx);
    if (!m || !*m)
        fail_msg("%s: %s set no error message", what, call);
    if (strstr(m, "vkla_buffer_create: size is 0"))
        fail_msg("%s: %s did not set its own error message (stale: \"%s\")", what, call, m);
    if (word && !mentions(m, word))
        fail_msg("%s: %s message \"%s\" does not mention '%s'", what, call, m, word);
}

/* Each of _run, _scratch_size and _record returns want and names word in its message. */
static void expect_fail(const char *what, const vkla_linear_attn_args *a, vkla_result want,
                        const char *word)
{
    vkla_context *ctx = th_ctx();
    reset_message(ctx);
    vkla_result r = vkla_linear_attn_run(ctx, a);
    if (r != want)
        fail_msg("%s: _run returned %s, expected %s (message: %s)", what, vkla_result_string(r),
                 vkla_result_string(want), vkla_last_error(ctx));
    check_message(what, "_run", ctx, word);

    reset_message(ctx);
    uint64_t n = 0;
    r = vkla_linear_attn_scratch_size(ctx, a, &n);
    if (r != want)
        fail_msg("%s: _scratch_size returned %s, expected %s (message: %s)", what,
                 vkla_result_string(r), vkla_result_string(want), vkla_last_error(ctx));
    check_message(what, "_scratch_size", ctx, word);

    reset_message(ctx);
    r = vkla_linear_attn_record(ctx, g_err_cmd.cmd, a);
    if (r != want)
        fail_msg("%s: _record returned %s, expected %s (message: %s)", what,
                 vkla_result_string(r), vkla_result_string(want), vkla_last_error(ctx));
    check_message(what, "_record", ctx, word);
}

static void test_result_strings(void **state)
{
    (void)state;
    const vkla_result codes[] = {
        VKLA_SUCCESS, VKLA_ERROR_NULL_POINTER, VKLA_ERROR_INVALID_ARGUMENT,
        VKLA_ERROR_SHAPE_MISMATCH, VKLA_ERROR_DTYPE_MISMATCH, VKLA_ERROR_UNSUPPORTED,
        VKLA_ERROR_BAD_SEQLENS, VKLA_ERROR_OUT_OF_RANGE, VKLA_ERROR_SCRATCH_TOO_SMALL,
        VKLA_ERROR_NO_VULKAN, VKLA_ERROR_NO_DEVICE, VKLA_ERROR_OUT_OF_MEMORY,
        VKLA_ERROR_DEVICE_LOST, VKLA_ERROR_VULKAN, VKLA_ERROR_BAD_PIPELINE_CACHE};
    const char *names[] = {
        "VKLA_SUCCESS", "VKLA_ERROR_NULL_POINTER", "VKLA_ERROR_INVALID_ARGUMENT",
        "VKLA_ERROR_SHAPE_MISMATCH", "VKLA_ERROR_DTYPE_MISMATCH", "VKLA_ERROR_UNSUPPORTED",
        "VKLA_ERROR_BAD_SEQLENS", "VKLA_ERROR_OUT_OF_RANGE", "VKLA_ERROR_SCRATCH_TOO_SMALL",
        "VKLA_ERROR_NO_VULKAN", "VKLA_ERROR_NO_DEVICE", "VKLA_ERROR_OUT_OF_MEMORY",
        "VKLA_ERROR_DEVICE_LOST", "VKLA_ERROR_VULKAN", "VKLA_ERROR_BAD_PIPELINE_CACHE"};
    size_t n = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < n; i++) {
        const char *s = vkla_result_string(codes[i]);
        assert_non_null(s);
        if (strncmp(s, names[i], strlen(names[i])) != 0 || is_ident(s[strlen(names[i])]))
            fail_msg("vkla_result_string(%d) = \"%s\" does not start with %s", (int)codes[i], s,
                     names[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s, vkla_result_string(codes[j])) == 0)
                fail_msg("codes %d and %d share the string \"%s\"", (int)codes[i], (int)codes[j], s);
    }
    assert_non_null(vkla_result_string((vkla_result)-999));
    assert_non_null(vkla_result_string((vkla_result)12345));
    /* other string helpers never return NULL */
    assert_non_null(vkla_dtype_name((vkla_dtype)77));
    assert_non_null(vkla_form_name((vkla_form)77));
    assert_string_equal(vkla_last_error(NULL), "");
}

static void test_error_paths(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    own_cmd_init(&g_err_cmd, ctx);
    own_cmd_begin(&g_err_cmd);

    prob p;
    prob_init(&p, PB, PT, PH, PK, PV, P_G | P_H0, 11);
    prob_ref(&p);
    dev d;
    dev_init(&d, &p);
    const vkla_linear_attn_args good = dev_args(&d, &p, VKLA_FORM_CHUNK);
    vkla_linear_attn_args a;

    /* NULL context: the code, and no crash (there is nowhere to put a message) */
    uint64_t n = 0;
    assert_int_equal(vkla_linear_attn_run(NULL, &good), VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_linear_attn_scratch_size(NULL, &good, &n), VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_linear_attn_record(NULL, g_err_cmd.cmd, &good), VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_buffer_create(NULL, 16, NULL), VKLA_ERROR_NULL_POINTER);

    /* NULL args, NULL out-pointer, NULL command buffer */
    expect_fail("NULL args", NULL, VKLA_ERROR_NULL_POINTER, "args");
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &good, NULL), VKLA_ERROR_NULL_POINTER);
    check_message("NULL bytes", "_scratch_size", ctx, "bytes");
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_record(ctx, VK_NULL_HANDLE, &good), VKLA_ERROR_NULL_POINTER);
    check_message("NULL command buffer", "_record", ctx, NULL);

    /* missing tensors */
    static const char *const names4[] = {"q", "k", "v", "o"};
    for (int i = 0; i < 4; i++) {
        a = good;
        vkla_tensor *t = i == 0 ? &a.q : i == 1 ? &a.k : i == 2 ? &a.v : &a.o;
        t->buffer = NULL;
        char what[64];
        snprintf(what, sizeof(what), "missing %s", names4[i]);
        expect_fail(what, &a, VKLA_ERROR_NULL_POINTER, names4[i]);
    }

    /* wrong ndim */
    for (int i = 0; i < 4; i++) {
        a = good;
        vkla_tensor *t = i == 0 ? &a.q : i == 1 ? &a.k : i == 2 ? &a.v : &a.o;
        t->ndim = 3;
        char what[64];
        snprintf(what, sizeof(what), "%s with 3 dims", names4[i]);
        expect_fail(what, &a, VKLA_ERROR_SHAPE_MISMATCH, names4[i]);
    }
    a = good;
    a.g.ndim = 4;
    a.g.shape[3] = 1;
    expect_fail("g with 4 dims", &a, VKLA_ERROR_SHAPE_MISMATCH, "g");

    /* shape mismatches: k vs q (T, H, K), v vs q (T), o vs v (V), states, gates */
    a = good; a.k.shape[1] = PT - 1;
    expect_fail("k T != q T", &a, VKLA_ERROR_SHAPE_MISMATCH, "k");
    a = good; a.k.shape[2] = 1;
    expect_fail("k H != q H", &a, VKLA_ERROR_SHAPE_MISMATCH, "k");
    a = good; a.k.shape[3] = PK / 2;
    expect_fail("k K != q K", &a, VKLA_ERROR_SHAPE_MISMATCH, "k");
    a = good; a.v.shape[1] = PT - 1;
    expect_fail("v T != q T", &a, VKLA_ERROR_SHAPE_MISMATCH, "v");
    a = good; a.o.shape[3] = PV / 2;
    expect_fail("o V != v V", &a, VKLA_ERROR_SHAPE_MISMATCH, "o");
    a = good; a.o.shape[0] = 1;
    expect_fail("o B != v B", &a, VKLA_ERROR_SHAPE_MISMATCH, "o");
    a = good; a.g.shape[1] = PT - 1;
    expect_fail("g T", &a, VKLA_ERROR_SHAPE_MISMATCH, "g");
    a = good; a.h0.shape[2] = PK / 2;
    expect_fail("h0 K", &a, VKLA_ERROR_SHAPE_MISMATCH, "h0");
    a = good; a.ht.shape[0] = 1;
    expect_fail("ht N", &a, VKLA_ERROR_SHAPE_MISMATCH, "ht");
    a = good; a.q.shape[1] = 0; a.k.shape[1] = 0; a.v.shape[1] = 0; a.o.shape[1] = 0;
    expect_fail("zero-length dimension", &a, VKLA_ERROR_SHAPE_MISMATCH, "q");

    /* dtype mismatches */
    a = good; a.k.dtype = VKLA_DTYPE_F16;
    expect_fail("k f16 with q f32", &a, VKLA_ERROR_DTYPE_MISMATCH, "k");
    a = good; a.o.dtype = VKLA_DTYPE_BF16;
    expect_fail("o bf16 with q f32", &a, VKLA_ERROR_DTYPE_MISMATCH, "o");
    a = good; a.q.dtype = VKLA_DTYPE_I32;
    expect_fail("q i32", &a, VKLA_ERROR_DTYPE_MISMATCH, "q");
    a = good; a.g.dtype = VKLA_DTYPE_F16;
    expect_fail("g f16", &a, VKLA_ERROR_DTYPE_MISMATCH, "g");
    a = good; a.h0.dtype = VKLA_DTYPE_BF16;
    expect_fail("h0 bf16", &a, VKLA_ERROR_DTYPE_MISMATCH, "h0");
    a = good; a.ht.dtype = VKLA_DTYPE_F16;
    expect_fail("ht f16", &a, VKLA_ERROR_DTYPE_MISMATCH, "ht");

    /* K > 256 and V > 256: tensors in one big buffer so the bounds checks pass */
    {
        vkla_buffer *big = NULL;
        assert_int_equal(vkla_buffer_create(ctx, 64 * 1024, &big), VKLA_SUCCESS);
        uint64_t s257[4] = {1, 2, 1, 257}, s16[4] = {1, 2, 1, 16};
        a = good;
        a.g = a.h0 = a.ht = (vkla_tensor){0};
        a.q = vkla_tensor_make(big, 0, VKLA_DTYPE_F32, 4, s257);
        a.k = vkla_tensor_make(big, 4096, VKLA_DTYPE_F32, 4, s257);
        a.v = vkla_tensor_make(big, 8192, VKLA_DTYPE_F32, 4, s16);
        a.o = vkla_tensor_make(big, 12288, VKLA_DTYPE_F32, 4, s16);
        expect_fail("K = 257", &a, VKLA_ERROR_UNSUPPORTED, "K");
        a.q = vkla_tensor_make(big, 0, VKLA_DTYPE_F32, 4, s16);
        a.k = vkla_tensor_make(big, 4096, VKLA_DTYPE_F32, 4, s16);
        a.v = vkla_tensor_make(big, 8192, VKLA_DTYPE_F32, 4, s257);
        a.o = vkla_tensor_make(big, 12288, VKLA_DTYPE_F32, 4, s257);
        expect_fail("V = 257", &a, VKLA_ERROR_UNSUPPORTED, "V");
        vkla_buffer_destroy(ctx, big);
    }

    /* cu_seqlens */
    {
        static const int32_t first1[] = {1, 30, PT}, decr[] = {0, 40, 30, PT},
                             short_[] = {0, 30, PT - 1}, ok[] = {0, 30, PT};
        a = good; /* B = 2 with cu_seqlens */
        a.cu_seqlens = ok; a.num_seqs = 2;
        expect_fail("cu_seqlens with B = 2", &a, VKLA_ERROR_BAD_SEQLENS, "cu_seqlens");
        /* B = 1 views of the first batch row; states have N = 2 rows (the buffers have room) */
        vkla_linear_attn_args b1 = good;
        b1.q.shape[0] = b1.k.shape[0] = b1.v.shape[0] = b1.o.shape[0] = b1.g.shape[0] = 1;
        a = b1; a.cu_seqlens = first1; a.num_seqs = 2;
        expect_fail("cu_seqlens[0] != 0", &a, VKLA_ERROR_BAD_SEQLENS, "cu_seqlens");
        a = b1; a.cu_seqlens = decr; a.num_seqs = 3;
        a.h0.shape[0] = a.ht.shape[0] = 3;
        a.h0.buffer = a.ht.buffer = NULL; /* no state: keeps the N rows out of the picture */
        expect_fail("cu_seqlens decreasing", &a, VKLA_ERROR_BAD_SEQLENS, "cu_seqlens");
        a = b1; a.cu_seqlens = short_; a.num_seqs = 2;
        expect_fail("cu_seqlens[N] != T", &a, VKLA_ERROR_BAD_SEQLENS, "cu_seqlens");
        a = b1; a.cu_seqlens = ok; a.num_seqs = 0;
        expect_fail("num_seqs 0", &a, VKLA_ERROR_BAD_SEQLENS, "num_seqs");
        a = good; a.num_seqs = 3;
        expect_fail("num_seqs != B without cu_seqlens", &a, VKLA_ERROR_BAD_SEQLENS, "num_seqs");
        /* and a valid varlen call passes the checks (size query only: no extra pipeline) */
        a = b1; a.cu_seqlens = ok; a.num_seqs = 2;
        assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a, &n), VKLA_SUCCESS);
        assert_true(n > 0);
        a.form = VKLA_FORM_RECURRENT;
        assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a, &n), VKLA_SUCCESS);
        assert_true(n > 0); /* the sequence table */
    }

    /* views past the end of their buffer, misaligned offsets, non-contiguous last dims */
    a = good; a.q.offset = vkla_buffer_size(a.q.buffer) - (uint64_t)p.nq * 4 + 4;
    expect_fail("q one element past the end", &a, VKLA_ERROR_OUT_OF_RANGE, "q");
    a = good; a.o.offset = vkla_buffer_size(a.o.buffer);
    expect_fail("o starting at the end", &a, VKLA_ERROR_OUT_OF_RANGE, "o");
    a = good; a.v.strides[0] = (uint64_t)PT * PH * PV * 4;
    expect_fail("v strides past the end", &a, VKLA_ERROR_OUT_OF_RANGE, "v");
    a = good; a.k.strides[0] = UINT64_MAX / 2;
    expect_fail("k stride overflow", &a, VKLA_ERROR_OUT_OF_RANGE, "k");
    a = good; a.ht.offset = vkla_buffer_size(a.ht.buffer) - (uint64_t)p.ns * 4 + 8;
    expect_fail("ht past the end", &a, VKLA_ERROR_OUT_OF_RANGE, "ht");
    a = good; a.q.offset -= 2;
    expect_fail("q offset not a multiple of 4", &a, VKLA_ERROR_INVALID_ARGUMENT, "q");
    a = good; a.g.offset -= 1;
    expect_fail("g offset not a multiple of 4", &a, VKLA_ERROR_INVALID_ARGUMENT, "g");
    a = good; a.q.strides[3] = 2;
    expect_fail("q last dim not contiguous", &a, VKLA_ERROR_INVALID_ARGUMENT, "q");
    a = good; a.o.strides[3] = 2;
    expect_fail("o last dim not contiguous", &a, VKLA_ERROR_INVALID_ARGUMENT, "o");
    a = good; a.h0.strides[0] = (uint64_t)PH * PK * PV; a.h0.strides[1] = (uint64_t)PK * PV / 2;
    expect_fail("h0 not contiguous", &a, VKLA_ERROR_INVALID_ARGUMENT, "h0");

    /* options */
    a = good; a.form = VKLA_FORM_ATTN;
    expect_fail("form attn", &a, VKLA_ERROR_INVALID_ARGUMENT, "form");
    a = good; a.form = (vkla_form)99;
    expect_fail("form 99", &a, VKLA_ERROR_INVALID_ARGUMENT, "form");
    a = good; a.chunk_size = 48;
    expect_fail("chunk_size 48", &a, VKLA_ERROR_INVALID_ARGUMENT, "chunk_size");
    a = good; a.chunk_size = 128;
    expect_fail("chunk_size 128", &a, VKLA_ERROR_INVALID_ARGUMENT, "chunk_size");
    a = good; a.scale = NAN;
    expect_fail("scale NaN", &a, VKLA_ERROR_INVALID_ARGUMENT, "scale");
    a = good; a.eps = -1.0f;
    expect_fail("eps < 0", &a, VKLA_ERROR_INVALID_ARGUMENT, "eps");
    {
        th_tensor z0;
        uint64_t sz[3] = {PB, PH, PK};
        th_tensor_new(&z0, VKLA_DTYPE_F32, 3, sz, NULL);
        a = good; a.z0 = z0.t;
        expect_fail("z0 without normalize", &a, VKLA_ERROR_INVALID_ARGUMENT, "z0");
        a = good; a.zt = z0.t;
        expect_fail("zt without normalize", &a, VKLA_ERROR_INVALID_ARGUMENT, "zt");
        th_tensor_free(&z0);
    }

    /* scratch: size queries, missing and too small when recording */
    uint64_t need_chunk = 0, need_rec = 1;
    a = good;
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a, &need_chunk), VKLA_SUCCESS);
    assert_true(need_chunk > 0);
    a.form = VKLA_FORM_DEFAULT;
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a, &n), VKLA_SUCCESS);
    assert_true(n == need_chunk); /* default form is chunk */
    a.form = VKLA_FORM_RECURRENT;
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a, &need_rec), VKLA_SUCCESS);
    assert_true(need_rec == 0);
    a = good;
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_record(ctx, g_err_cmd.cmd, &a), VKLA_ERROR_NULL_POINTER);
    check_message("record without scratch", "_record", ctx, "scratch");
    vkla_buffer *small = NULL;
    assert_int_equal(vkla_buffer_create(ctx, need_chunk - 4, &small), VKLA_SUCCESS);
    a.scratch = small;
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_record(ctx, g_err_cmd.cmd, &a), VKLA_ERROR_SCRATCH_TOO_SMALL);
    check_message("record with small scratch", "_record", ctx, "scratch");
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_run(ctx, &a), VKLA_ERROR_SCRATCH_TOO_SMALL);
    check_message("run with small scratch", "_run", ctx, "scratch");
    vkla_buffer_destroy(ctx, small);
    vkla_buffer *enough = NULL;
    assert_int_equal(vkla_buffer_create(ctx, need_chunk + 256, &enough), VKLA_SUCCESS);
    a.scratch = enough;
    a.scratch_offset = 512; /* leaves need_chunk - 256 bytes */
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_record(ctx, g_err_cmd.cmd, &a), VKLA_ERROR_SCRATCH_TOO_SMALL);
    check_message("record with scratch_offset leaving too little", "_record", ctx, "scratch");
    a.scratch_offset = need_chunk + 1024; /* past the end */
    reset_message(ctx);
    assert_int_equal(vkla_linear_attn_record(ctx, g_err_cmd.cmd, &a), VKLA_ERROR_SCRATCH_TOO_SMALL);
    check_message("record with scratch_offset past the end", "_record", ctx, "scratch");
    {
        vkla_device_info di;
        vkla_context_device_info(ctx, &di);
        if (di.min_storage_buffer_offset_alignment > 4) {
            a.scratch_offset = 4;
            reset_message(ctx);
            assert_int_equal(vkla_linear_attn_record(ctx, g_err_cmd.cmd, &a),
                             VKLA_ERROR_INVALID_ARGUMENT);
            check_message("record with misaligned scratch_offset", "_record", ctx, "scratch_offset");
        }
    }
    vkla_buffer_destroy(ctx, enough);
    /* the recurrent form needs no scratch to record */
    vkla_linear_attn_args rec = good;
    rec.form = VKLA_FORM_RECURRENT;
    assert_int_equal(vkla_linear_attn_record(ctx, g_err_cmd.cmd, &rec), VKLA_SUCCESS);

    /* buffers */
    vkla_buffer *buf = NULL;
    reset_message(ctx);
    assert_int_equal(vkla_buffer_create(ctx, 0, &buf), VKLA_ERROR_INVALID_ARGUMENT);
    assert_null(buf);
    assert_true(mentions(vkla_last_error(ctx), "size"));
    assert_int_equal(vkla_buffer_create(ctx, 1000, &buf), VKLA_SUCCESS);
    assert_true(vkla_buffer_size(buf) >= 1000);
    assert_true(vkla_buffer_vk(buf) != VK_NULL_HANDLE);
    char host[1024] = {0};
    struct { uint64_t off, size; } bad[] = {{0, 1001}, {1000, 1}, {1001, 0}, {8, 996},
                                           {UINT64_MAX - 4, 8}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reset_message(ctx);
        assert_int_equal(vkla_buffer_upload(ctx, buf, bad[i].off, host, bad[i].size),
                         VKLA_ERROR_OUT_OF_RANGE);
        check_message("upload out of range", "vkla_buffer_upload", ctx, "vkla_buffer_upload");
        reset_message(ctx);
        assert_int_equal(vkla_buffer_download(ctx, buf, bad[i].off, host, bad[i].size),
                         VKLA_ERROR_OUT_OF_RANGE);
        check_message("download out of range", "vkla_buffer_download", ctx, "vkla_buffer_download");
    }
    reset_message(ctx);
    assert_int_equal(vkla_buffer_upload(ctx, NULL, 0, host, 4), VKLA_ERROR_NULL_POINTER);
    check_message("upload to NULL buffer", "vkla_buffer_upload", ctx, NULL);
    reset_message(ctx);
    assert_int_equal(vkla_buffer_upload(ctx, buf, 0, NULL, 4), VKLA_ERROR_NULL_POINTER);
    check_message("upload from NULL", "vkla_buffer_upload", ctx, "data");
    reset_message(ctx);
    assert_int_equal(vkla_buffer_fill(ctx, buf, 0, 1004, 0), VKLA_ERROR_OUT_OF_RANGE);
    check_message("fill out of range", "vkla_buffer_fill", ctx, "vkla_buffer_fill");
    reset_message(ctx);
    assert_int_equal(vkla_buffer_fill(ctx, buf, 2, 4, 0), VKLA_ERROR_INVALID_ARGUMENT);
    check_message("fill misaligned", "vkla_buffer_fill", ctx, "vkla_buffer_fill");
    /* in range works, with an odd size and offset */
    for (int i = 0; i < 1000; i++)
        host[i] = (char)(i * 7);
    assert_int_equal(vkla_buffer_upload(ctx, buf, 0, host, 1000), VKLA_SUCCESS);
    char back[1000];
    assert_int_equal(vkla_buffer_download(ctx, buf, 3, back, 997), VKLA_SUCCESS);
    assert_memory_equal(back, host + 3, 997);
    vkla_buffer_destroy(ctx, buf);
    vkla_buffer_destroy(ctx, NULL); /* no-op */

    /* after all of that, the context still works: run and compare */
    assert_int_equal(vkEndCommandBuffer(g_err_cmd.cmd), VK_SUCCESS);
    own_cmd_free(&g_err_cmd);
    run_ok(ctx, &good, "valid chunk call after errors");
    check_tensor("after errors: o", &d.o, p.o, p.nv);
    check_tensor("after errors: ht", &d.ht, p.ht, p.ns);
    dev_free(&d);
    prob_free(&p);
    th_check_validation();
}

/* ------------------------------------------------------------------------------------------ */
/* Recording into the caller's command buffer                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Reference of p's problem with another q (a previous output, rounded to f32). */
static void ref_with_q(const prob *p, const double *q_in, double *o, double *ht)
{
    double *q = malloc(p->nq * 8);
    assert_non_null(q);
    memcpy(q, q_in, p->nq * 8);
    th_round(q, p->nq, VKLA_DTYPE_F32);
    vkla_ref_linear_attn_args ra = {
        .B = (int)p->B, .T = (int)p->T, .H = (int)p->H, .K = (int)p->K, .V = (int)p->V,
        .q = q, .k = p->k, .v = p->v, .g = p->g, .gk = p->gk, .h0 = p->h0,
        .scale = 1.0 / sqrt((double)p->K), .eps = 1e-6, .o = o, .ht = ht};
    assert_int_equal(vkla_ref_linear_attn(&ra), 0);
    free(q);
}

static void test_record_own_command_buffer(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    prob p;
    prob_init(&p, PB, PT, PH, PK, PV, P_G | P_H0, 21);
    prob_ref(&p);
    /* call 2 (recurrent) takes call 1's o as q; call 3 (chunk, same scratch) takes call 2's */
    double *o2 = malloc(p.nv * 8), *ht2 = malloc(p.ns * 8);
    double *o3 = malloc(p.nv * 8), *ht3 = malloc(p.ns * 8);
    ref_with_q(&p, p.o, o2, ht2);
    ref_with_q(&p, o2, o3, ht3);

    dev d;
    dev_init(&d, &p);
    th_tensor to2, tht2, to3, tht3;
    uint64_t sv[4] = {PB, PT, PH, PV}, ss[4] = {PB, PH, PK, PV};
    th_tensor_new(&to2, VKLA_DTYPE_F32, 4, sv, NULL);
    th_tensor_new(&tht2, VKLA_DTYPE_F32, 4, ss, NULL);
    th_tensor_new(&to3, VKLA_DTYPE_F32, 4, sv, NULL);
    th_tensor_new(&tht3, VKLA_DTYPE_F32, 4, ss, NULL);

    vkla_linear_attn_args a1 = dev_args(&d, &p, VKLA_FORM_CHUNK);
    vkla_linear_attn_args a2 = dev_args(&d, &p, VKLA_FORM_RECURRENT);
    a2.q = d.o.t; a2.o = to2.t; a2.ht = tht2.t;
    vkla_linear_attn_args a3 = dev_args(&d, &p, VKLA_FORM_CHUNK);
    a3.q = to2.t; a3.o = to3.t; a3.ht = tht3.t;
    uint64_t n1 = 0, n2 = 1, n3 = 0;
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a1, &n1), VKLA_SUCCESS);
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a2, &n2), VKLA_SUCCESS);
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a3, &n3), VKLA_SUCCESS);
    assert_true(n1 > 0 && n2 == 0 && n3 == n1);
    vkla_buffer *scratch = NULL;
    assert_int_equal(vkla_buffer_create(ctx, n1, &scratch), VKLA_SUCCESS);
    a1.scratch = a3.scratch = scratch;

    own_cmd c;
    own_cmd_init(&c, ctx);
    own_cmd_begin(&c);
    assert_int_equal(vkla_linear_attn_record(ctx, c.cmd, &a1), VKLA_SUCCESS);
    /* exit contract: outputs written by COMPUTE_SHADER / SHADER_WRITE */
    barrier(c.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    assert_int_equal(vkla_linear_attn_record(ctx, c.cmd, &a2), VKLA_SUCCESS);
    barrier(c.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    assert_int_equal(vkla_linear_attn_record(ctx, c.cmd, &a3), VKLA_SUCCESS);
    barrier(c.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    own_cmd_submit(&c, ctx);

    check_tensor("record call 1 (chunk): o", &d.o, p.o, p.nv);
    check_tensor("record call 1 (chunk): ht", &d.ht, p.ht, p.ns);
    check_tensor("record call 2 (recurrent on call 1's o): o", &to2, o2, p.nv);
    check_tensor("record call 2 (recurrent on call 1's o): ht", &tht2, ht2, p.ns);
    check_tensor("record call 3 (chunk on call 2's o, same scratch): o", &to3, o3, p.nv);
    check_tensor("record call 3 (chunk on call 2's o, same scratch): ht", &tht3, ht3, p.ns);

    /* the command buffer can be re-recorded and resubmitted with the same scratch */
    assert_int_equal(vkla_buffer_fill(ctx, d.o.buf, TH_GUARD, d.o.bytes, 0), VKLA_SUCCESS);
    own_cmd_begin(&c);
    assert_int_equal(vkla_linear_attn_record(ctx, c.cmd, &a1), VKLA_SUCCESS);
    barrier(c.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    own_cmd_submit(&c, ctx);
    check_tensor("re-recorded call 1: o", &d.o, p.o, p.nv);

    own_cmd_free(&c);
    vkla_buffer_destroy(ctx, scratch);
    th_tensor_free(&to2); th_tensor_free(&tht2); th_tensor_free(&to3); th_tensor_free(&tht3);
    dev_free(&d);
    prob_free(&p);
    free(o2); free(ht2); free(o3); free(ht3);
    th_check_validation();
}

/* ------------------------------------------------------------------------------------------ */
/* Chunk pass, then decode steps                                                               */
/* ------------------------------------------------------------------------------------------ */

/* A [B, len, ...] window of a contiguous [B, T, ...] tensor starting at token t0 (a strided
 * view: the batch stride stays that of the full tensor). */
static vkla_tensor token_view(vkla_tensor full, uint32_t t0, uint32_t len)
{
    uint64_t st[VKLA_MAX_DIMS];
    uint64_t packed = 1;
    for (int i = (int)full.ndim - 1; i >= 0; i--) {
        st[i] = packed;
        packed *= full.shape[i];
    }
    full.offset += (uint64_t)t0 * st[1] * vkla_dtype_size(full.dtype);
    full.strides[0] = st[0];
    full.shape[1] = len;
    return full;
}

/* Copies tokens [t0, t0+len) of a [B,T,X] (X = everything after T) host array. */
static double *slice_tokens(const double *x, uint32_t B, uint32_t T, size_t X, uint32_t t0,
                            uint32_t len)
{
    double *s = malloc((size_t)B * len * X * 8);
    assert_non_null(s);
    for (uint32_t b = 0; b < B; b++)
        memcpy(s + (size_t)b * len * X, x + ((size_t)b * T + t0) * X, (size_t)len * X * 8);
    return s;
}

static void test_chunk_then_decode(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    enum { T1 = PT, NSTEP = 4, TT = T1 + NSTEP };
    prob p;
    prob_init(&p, PB, TT, PH, PK, PV, P_G | P_GK | P_NORM, 31);
    prob_ref(&p);
    const size_t HK = (size_t)PH * PK;

    /* q, k, v and o live in full [B, TT, ...] buffers; every call uses strided token views.
     * The gates must be contiguous, so each call gets its own g and gk tensors. */
    dev d;
    dev_init(&d, &p); /* q k v o g gk (full), ht zt */
    th_tensor ht2, zt2, g1, gk1, gs, gks;
    uint64_t ss[4] = {PB, PH, PK, PV}, sz[3] = {PB, PH, PK};
    uint64_t sg1[3] = {PB, T1, PH}, sgk1[4] = {PB, T1, PH, PK};
    uint64_t sgs[3] = {PB, 1, PH}, sgks[4] = {PB, 1, PH, PK};
    th_tensor_new(&ht2, VKLA_DTYPE_F32, 4, ss, NULL);
    th_tensor_new(&zt2, VKLA_DTYPE_F32, 3, sz, NULL);
    double *g1h = slice_tokens(p.g, PB, TT, PH, 0, T1);
    double *gk1h = slice_tokens(p.gk, PB, TT, HK, 0, T1);
    th_tensor_new(&g1, VKLA_DTYPE_F32, 3, sg1, g1h);
    th_tensor_new(&gk1, VKLA_DTYPE_F32, 4, sgk1, gk1h);
    th_tensor_new(&gs, VKLA_DTYPE_F32, 3, sgs, NULL);
    th_tensor_new(&gks, VKLA_DTYPE_F32, 4, sgks, NULL);
    free(g1h);
    free(gk1h);

    /* chunk pass over the first T1 tokens: no initial state, returns ht and zt */
    vkla_linear_attn_args a;
    memset(&a, 0, sizeof(a));
    a.form = VKLA_FORM_CHUNK;
    a.q = token_view(d.q.t, 0, T1);
    a.k = token_view(d.k.t, 0, T1);
    a.v = token_view(d.v.t, 0, T1);
    a.o = token_view(d.o.t, 0, T1);
    a.g = g1.t;
    a.gk = gk1.t;
    a.ht = d.ht.t;
    a.zt = d.zt.t;
    a.normalize = 1;
    run_ok(ctx, &a, "chunk pass");

    /* decode: one recurrent step per token, state ping-ponging between two buffers */
    th_tensor *hin = &d.ht, *hout = &ht2, *zin = &d.zt, *zout = &zt2;
    for (uint32_t s = 0; s < NSTEP; s++) {
        uint32_t t = T1 + s;
        double *gsh = slice_tokens(p.g, PB, TT, PH, t, 1);
        double *gksh = slice_tokens(p.gk, PB, TT, HK, t, 1);
        float gf[PB * PH], gkf[PB * PH * PK];
        for (size_t i = 0; i < (size_t)PB * PH; i++)
            gf[i] = (float)gsh[i];
        for (size_t i = 0; i < (size_t)PB * HK; i++)
            gkf[i] = (float)gksh[i];
        free(gsh);
        free(gksh);
        assert_int_equal(vkla_buffer_upload(ctx, gs.buf, TH_GUARD, gf, sizeof(gf)), VKLA_SUCCESS);
        assert_int_equal(vkla_buffer_upload(ctx, gks.buf, TH_GUARD, gkf, sizeof(gkf)), VKLA_SUCCESS);
        memset(&a, 0, sizeof(a));
        a.form = VKLA_FORM_RECURRENT;
        a.q = token_view(d.q.t, t, 1);
        a.k = token_view(d.k.t, t, 1);
        a.v = token_view(d.v.t, t, 1);
        a.o = token_view(d.o.t, t, 1);
        a.g = gs.t;
        a.gk = gks.t;
        a.h0 = hin->t;
        a.ht = hout->t;
        a.z0 = zin->t;
        a.zt = zout->t;
        a.normalize = 1;
        run_ok(ctx, &a, "decode step");
        th_tensor *tmp = hin; hin = hout; hout = tmp;
        tmp = zin; zin = zout; zout = tmp;
    }
    check_tensor("chunk then decode: o over all tokens", &d.o, p.o, p.nv);
    check_tensor("chunk then decode: final ht", hin, p.ht, p.ns);
    check_tensor("chunk then decode: final zt", zin, p.zt, p.nz);

    th_tensor_free(&ht2); th_tensor_free(&zt2); th_tensor_free(&g1); th_tensor_free(&gk1);
    th_tensor_free(&gs); th_tensor_free(&gks);
    dev_free(&d);
    prob_free(&p);
    th_check_validation();
}

/* ------------------------------------------------------------------------------------------ */
/* Strided views: q, k, v in one fused [B, T, 3, H, K] buffer; o with padded strides           */
/* ------------------------------------------------------------------------------------------ */

static void test_fused_views(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    prob p;
    prob_init(&p, PB, PT, PH, PK, PV, P_G | P_H0, 41);
    prob_ref(&p);
    const uint64_t HK = (uint64_t)PH * PK;
    /* fused qkv: [B, T, 3, H, K] (K == V here), starting 64 bytes into its buffer */
    const uint64_t base = 64, tok = 3 * HK, n_fused = (uint64_t)PB * PT * tok;
    float *fused = malloc(n_fused * 4);
    assert_non_null(fused);
    for (uint64_t bt = 0; bt < (uint64_t)PB * PT; bt++)
        for (uint64_t i = 0; i < HK; i++) {
            fused[bt * tok + 0 * HK + i] = (float)p.q[bt * HK + i];
            fused[bt * tok + 1 * HK + i] = (float)p.k[bt * HK + i];
            fused[bt * tok + 2 * HK + i] = (float)p.v[bt * HK + i];
        }
    vkla_buffer *fb = NULL;
    assert_int_equal(vkla_buffer_create(ctx, base + n_fused * 4, &fb), VKLA_SUCCESS);
    assert_int_equal(vkla_buffer_upload(ctx, fb, base, fused, n_fused * 4), VKLA_SUCCESS);
    free(fused);
    uint64_t sq[4] = {PB, PT, PH, PK};
    vkla_tensor q = vkla_tensor_make(fb, base, VKLA_DTYPE_F32, 4, sq);
    q.strides[0] = (uint64_t)PT * tok;
    q.strides[1] = tok;
    q.strides[2] = PK;
    q.strides[3] = 1;
    vkla_tensor k = q, v = q;
    k.offset = base + HK * 4;
    v.offset = base + 2 * HK * 4;

    /* o: head stride V + 3, token stride H * (V + 3) + 5, batch stride T * token + 7 */
    const uint64_t osh = PV + 3, ost = PH * osh + 5, osb = PT * ost + 7;
    const uint64_t n_o = (uint64_t)PB * osb;
    float *oimg = malloc(n_o * 4), *oback = malloc(n_o * 4);
    float *ocmp = malloc(p.nv * 4);
    for (uint64_t i = 0; i < n_o; i++)
        oimg[i] = -12345.0f; /* sentinel in the gaps */
    vkla_buffer *ob = NULL;
    assert_int_equal(vkla_buffer_create(ctx, n_o * 4, &ob), VKLA_SUCCESS);
    uint64_t sv[4] = {PB, PT, PH, PV};
    vkla_tensor o = vkla_tensor_make(ob, 0, VKLA_DTYPE_F32, 4, sv);
    o.strides[0] = osb;
    o.strides[1] = ost;
    o.strides[2] = osh;

    dev d;
    dev_init(&d, &p); /* for g, h0, ht */
    const vkla_form forms[2] = {VKLA_FORM_CHUNK, VKLA_FORM_RECURRENT};
    for (int f = 0; f < 2; f++) {
        assert_int_equal(vkla_buffer_upload(ctx, ob, 0, oimg, n_o * 4), VKLA_SUCCESS);
        vkla_linear_attn_args a = dev_args(&d, &p, forms[f]);
        a.q = q; a.k = k; a.v = v; a.o = o;
        run_ok(ctx, &a, "fused views");
        assert_int_equal(vkla_buffer_download(ctx, ob, 0, oback, n_o * 4), VKLA_SUCCESS);
        /* gather o and check that nothing outside the view was written */
        for (uint64_t b = 0; b < PB; b++)
            for (uint64_t t = 0; t < PT; t++)
                for (uint64_t h = 0; h < PH; h++)
                    for (uint64_t j = 0; j < PV; j++) {
                        uint64_t at = b * osb + t * ost + h * osh + j;
                        ocmp[((b * PT + t) * PH + h) * PV + j] = oback[at];
                        oback[at] = -12345.0f;
                    }
        for (uint64_t i = 0; i < n_o; i++)
            if (oback[i] != -12345.0f)
                fail_msg("%s: padded o view: element %llu outside the view was written",
                         vkla_form_name(forms[f]), (unsigned long long)i);
        char what[64];
        snprintf(what, sizeof(what), "fused views %s: o", vkla_form_name(forms[f]));
        th_assert_close(what, p.o, ocmp, p.nv, 1e-9);
        snprintf(what, sizeof(what), "fused views %s: ht", vkla_form_name(forms[f]));
        check_tensor(what, &d.ht, p.ht, p.ns);
    }
    free(oimg); free(oback); free(ocmp);
    vkla_buffer_destroy(ctx, fb);
    vkla_buffer_destroy(ctx, ob);
    dev_free(&d);
    prob_free(&p);
    th_check_validation();
}

/* ------------------------------------------------------------------------------------------ */
/* Buffers larger than maxStorageBufferRange                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Uploads a [B, rows] f32 host array (double) with a batch stride (elements) at offset. */
static void upload_batched(vkla_context *ctx, vkla_buffer *buf, uint64_t offset, uint64_t sb,
                           const double *x, uint32_t B, size_t per_b)
{
    float *f = malloc(per_b * 4);
    assert_non_null(f);
    for (uint32_t b = 0; b < B; b++) {
        for (size_t i = 0; i < per_b; i++)
            f[i] = x ? (float)x[(size_t)b * per_b + i] : NAN;
        assert_int_equal(vkla_buffer_upload(ctx, buf, offset + (uint64_t)b * sb * 4, f, per_b * 4),
                         VKLA_SUCCESS);
    }
    free(f);
}

static void download_batched(vkla_context *ctx, vkla_buffer *buf, uint64_t offset, uint64_t sb,
                             float *out, uint32_t B, size_t per_b)
{
    for (uint32_t b = 0; b < B; b++)
        assert_int_equal(vkla_buffer_download(ctx, buf, offset + (uint64_t)b * sb * 4,
                                              out + (size_t)b * per_b, per_b * 4),
                         VKLA_SUCCESS);
}

/* q, k, v, o at offset + {0, 64, 128, 192} KiB of buf, batch stride sb elements (0 = packed). */
static void run_placed(const char *what, vkla_buffer *buf, uint64_t offset, uint64_t sb,
                       const prob *p, dev *d, vkla_buffer *scratch, uint64_t scratch_offset)
{
    vkla_context *ctx = th_ctx();
    const size_t per_q = (size_t)p->T * p->H * p->K, per_v = (size_t)p->T * p->H * p->V;
    const uint64_t sbq = sb ? sb : per_q, sbv = sb ? sb : per_v;
    const uint64_t off[4] = {offset, offset + (64u << 10), offset + (128u << 10),
                             offset + (192u << 10)};
    upload_batched(ctx, buf, off[0], sbq, p->q, p->B, per_q);
    upload_batched(ctx, buf, off[1], sbq, p->k, p->B, per_q);
    upload_batched(ctx, buf, off[2], sbv, p->v, p->B, per_v);
    uint64_t sq[4] = {p->B, p->T, p->H, p->K}, sv[4] = {p->B, p->T, p->H, p->V};
    float *out = malloc(p->nv * 4);
    const vkla_form forms[2] = {VKLA_FORM_CHUNK, VKLA_FORM_RECURRENT};
    for (int f = 0; f < 2; f++) {
        upload_batched(ctx, buf, off[3], sbv, NULL, p->B, per_v);
        vkla_linear_attn_args a = dev_args(d, p, forms[f]);
        a.q = vkla_tensor_make(buf, off[0], VKLA_DTYPE_F32, 4, sq);
        a.k = vkla_tensor_make(buf, off[1], VKLA_DTYPE_F32, 4, sq);
        a.v = vkla_tensor_make(buf, off[2], VKLA_DTYPE_F32, 4, sv);
        a.o = vkla_tensor_make(buf, off[3], VKLA_DTYPE_F32, 4, sv);
        a.q.strides[0] = a.k.strides[0] = sbq;
        a.v.strides[0] = a.o.strides[0] = sbv;
        a.scratch = scratch;
        a.scratch_offset = scratch_offset;
        char name[128];
        snprintf(name, sizeof(name), "%s %s", what, vkla_form_name(forms[f]));
        run_ok(ctx, &a, name);
        download_batched(ctx, buf, off[3], sbv, out, p->B, per_v);
        char w2[160];
        snprintf(w2, sizeof(w2), "%s: o", name);
        th_assert_close(w2, p->o, out, p->nv, 1e-9);
        snprintf(w2, sizeof(w2), "%s: ht", name);
        check_tensor(w2, &d->ht, p->ht, p->ns);
    }
    free(out);
}

static void test_large_buffers(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    vkla_device_info info;
    assert_int_equal(vkla_context_device_info(ctx, &info), VKLA_SUCCESS);
    const uint64_t MiB = 1ull << 20;

    /* (a) tensors ~200 MiB into a 256 MiB buffer, scratch at 240 MiB of the same buffer */
    {
        prob p;
        prob_init(&p, PB, PT, PH, PK, PV, P_G | P_H0, 51);
        prob_ref(&p);
        dev d;
        dev_init(&d, &p);
        vkla_buffer *big = NULL;
        vkla_result r = vkla_buffer_create(ctx, 256 * MiB, &big);
        if (r != VKLA_SUCCESS)
            fail_msg("256 MiB buffer: %s: %s", vkla_result_string(r), vkla_last_error(ctx));
        run_placed("tensors at 200 MiB", big, 200 * MiB + 4096, 0, &p, &d, big, 240 * MiB);
        vkla_buffer_destroy(ctx, big);
        dev_free(&d);
        prob_free(&p);
    }
    /* (b) B = 3 with a batch stride of 70 MiB: every tensor spans ~140 MiB, more than lavapipe's
     * 128 MiB maxStorageBufferRange, so the dispatches must be split */
    {
        prob p;
        prob_init(&p, 3, 40, PH, PK, PV, P_G | P_H0, 52);
        prob_ref(&p);
        dev d;
        dev_init(&d, &p);
        const uint64_t sb = 70 * MiB / 4;
        const uint64_t size = 2 * sb * 4 + (256u << 10);
        if (info.max_storage_buffer_range >= size - (192u << 10))
            print_message("note: maxStorageBufferRange %llu covers the batched view; no split\n",
                          (unsigned long long)info.max_storage_buffer_range);
        vkla_buffer *big = NULL;
        vkla_result r = vkla_buffer_create(ctx, size, &big);
        if (r != VKLA_SUCCESS)
            fail_msg("%llu-byte buffer: %s: %s", (unsigned long long)size, vkla_result_string(r),
                     vkla_last_error(ctx));
        run_placed("B=3, 70 MiB batch stride", big, 0, sb, &p, &d, NULL, 0);
        vkla_buffer_destroy(ctx, big);
        dev_free(&d);
        prob_free(&p);
    }
    th_check_validation();
}

/* ------------------------------------------------------------------------------------------ */
/* Pipeline cache, device info, environment overrides                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct msg_log {
    char last_error[1024];
    int errors, warnings, validation;
} msg_log;

static void log_fn(void *user, vkla_message_severity sev, const char *text)
{
    msg_log *l = (msg_log *)user;
    if (sev == VKLA_MESSAGE_ERROR) {
        l->errors++;
        snprintf(l->last_error, sizeof(l->last_error), "%s", text);
    } else if (sev == VKLA_MESSAGE_WARNING) {
        l->warnings++;
    } else if (sev == VKLA_MESSAGE_VALIDATION) {
        l->validation++;
        fprintf(stderr, "[vkla validation] %s\n", text);
    }
}

static vkla_context *new_context(const char *device, const void *cache, size_t cache_size,
                                 msg_log *log)
{
    vkla_context_desc desc = {0};
    desc.device = device;
    desc.validation = 1;
    desc.message_fn = log_fn;
    desc.message_user = log;
    desc.pipeline_cache_data = cache;
    desc.pipeline_cache_size = cache_size;
    vkla_context *c = NULL;
    vkla_result r = vkla_context_create(&desc, &c);
    if (r != VKLA_SUCCESS)
        fail_msg("vkla_context_create: %s: %s", vkla_result_string(r), log->last_error);
    return c;
}

/* A recurrent op (the pipeline the main context already uses) on another context, with that
 * context's own buffers. */
static void small_op_on(vkla_context *c, const char *what)
{
    prob p;
    prob_init(&p, PB, PT, PH, PK, PV, P_G | P_H0, 61);
    prob_ref(&p);
    const double *src[5] = {p.q, p.k, p.v, p.g, p.h0};
    const size_t cnt[7] = {p.nq, p.nq, p.nv, p.ng, p.ns, p.nv, p.ns};
    vkla_buffer *bufs[7];
    for (int i = 0; i < 7; i++) {
        assert_int_equal(vkla_buffer_create(c, cnt[i] * 4, &bufs[i]), VKLA_SUCCESS);
        if (i < 5) {
            float *f = malloc(cnt[i] * 4);
            for (size_t j = 0; j < cnt[i]; j++)
                f[j] = (float)src[i][j];
            assert_int_equal(vkla_buffer_upload(c, bufs[i], 0, f, cnt[i] * 4), VKLA_SUCCESS);
            free(f);
        }
    }
    uint64_t sq[4] = {PB, PT, PH, PK}, sv[4] = {PB, PT, PH, PV}, sg[3] = {PB, PT, PH};
    uint64_t ss[4] = {PB, PH, PK, PV};
    vkla_linear_attn_args a = {0};
    a.form = VKLA_FORM_RECURRENT;
    a.q = vkla_tensor_make(bufs[0], 0, VKLA_DTYPE_F32, 4, sq);
    a.k = vkla_tensor_make(bufs[1], 0, VKLA_DTYPE_F32, 4, sq);
    a.v = vkla_tensor_make(bufs[2], 0, VKLA_DTYPE_F32, 4, sv);
    a.g = vkla_tensor_make(bufs[3], 0, VKLA_DTYPE_F32, 3, sg);
    a.h0 = vkla_tensor_make(bufs[4], 0, VKLA_DTYPE_F32, 4, ss);
    a.o = vkla_tensor_make(bufs[5], 0, VKLA_DTYPE_F32, 4, sv);
    a.ht = vkla_tensor_make(bufs[6], 0, VKLA_DTYPE_F32, 4, ss);
    run_ok(c, &a, what);
    float *o = malloc(p.nv * 4), *ht = malloc(p.ns * 4);
    assert_int_equal(vkla_buffer_download(c, bufs[5], 0, o, p.nv * 4), VKLA_SUCCESS);
    assert_int_equal(vkla_buffer_download(c, bufs[6], 0, ht, p.ns * 4), VKLA_SUCCESS);
    th_assert_close(what, p.o, o, p.nv, 1e-9);
    th_assert_close(what, p.ht, ht, p.ns, 1e-9);
    free(o);
    free(ht);
    for (int i = 0; i < 7; i++)
        vkla_buffer_destroy(c, bufs[i]);
    prob_free(&p);
}

static void test_pipeline_cache(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    /* ops have run on the main context by now */
    size_t size = 0;
    assert_int_equal(vkla_pipeline_cache_get(ctx, NULL, &size), VKLA_SUCCESS);
    assert_true(size > 0);
    unsigned char *data = malloc(size);
    assert_non_null(data);
    size_t got = size;
    assert_int_equal(vkla_pipeline_cache_get(ctx, data, &got), VKLA_SUCCESS);
    assert_true(got > 0 && got <= size);
    reset_message(ctx);
    assert_int_equal(vkla_pipeline_cache_get(ctx, data, NULL), VKLA_ERROR_NULL_POINTER);
    check_message("cache_get without size", "vkla_pipeline_cache_get", ctx, NULL);

    /* a context created from that data works */
    msg_log log = {0};
    vkla_context *c2 = new_context(NULL, data, got, &log);
    small_op_on(c2, "context from pipeline cache data");
    assert_int_equal(vkla_validation_message_count(c2), 0);
    vkla_context_destroy(c2);

    /* garbage and truncated data do not fail creation */
    unsigned char junk[777];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 131 + 7);
    memset(&log, 0, sizeof(log));
    vkla_context *c3 = new_context(NULL, junk, sizeof(junk), &log);
    assert_int_equal(vkla_validation_message_count(c3), 0);
    vkla_context_destroy(c3);
    memset(&log, 0, sizeof(log));
    vkla_context *c4 = new_context(NULL, data, got / 2, &log);
    assert_int_equal(vkla_validation_message_count(c4), 0);
    vkla_context_destroy(c4);
    memset(&log, 0, sizeof(log));
    vkla_context *c5 = new_context(NULL, junk, 3, &log);
    vkla_context_destroy(c5);
    free(data);
    th_check_validation();
}

static void test_device_info(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    vkla_device_info info;
    memset(&info, 0, sizeof(info));
    assert_int_equal(vkla_context_device_info(ctx, &info), VKLA_SUCCESS);
    assert_true(info.name[0] != 0);
    assert_true(info.subgroup_size > 0);
    assert_true(info.max_storage_buffer_range > 0);
    assert_true(info.variant[0] != 0);
    assert_true(info.api_version >= VK_API_VERSION_1_1);
    assert_true(info.push_descriptor);
    assert_true(info.min_storage_buffer_offset_alignment > 0);
    assert_true(info.max_workgroup_invocations > 0);
    assert_true(info.subgroup_min_size <= info.subgroup_size &&
                info.subgroup_size <= info.subgroup_max_size);
    reset_message(ctx);
    assert_int_equal(vkla_context_device_info(ctx, NULL), VKLA_ERROR_NULL_POINTER);
    check_message("device_info NULL", "vkla_context_device_info", ctx, NULL);
    assert_int_equal(vkla_context_device_info(NULL, &info), VKLA_ERROR_NULL_POINTER);
    /* the variant follows VKLA_SUBGROUP, which the test runner sets */
    const char *sg = getenv("VKLA_SUBGROUP");
    if (sg && strcmp(sg, "0") == 0)
        assert_non_null(strstr(info.variant, "shared"));
    else if (sg)
        assert_non_null(strstr(info.variant, "subgroup"));
    /* handles */
    assert_non_null(vkla_context_vk_device(ctx));
    assert_non_null(vkla_context_vk_queue(ctx));
    assert_null(vkla_context_vk_device(NULL));

    /* enumeration */
    uint32_t count = 0;
    assert_int_equal(vkla_enumerate_devices(NULL, &count), VKLA_SUCCESS);
    assert_true(count >= 1);
    vkla_device_info *all = calloc(count, sizeof(*all));
    uint32_t n = count;
    assert_int_equal(vkla_enumerate_devices(all, &n), VKLA_SUCCESS);
    assert_true(n == count);
    int found = 0;
    for (uint32_t i = 0; i < n; i++) {
        assert_true(all[i].name[0] != 0);
        if (strcmp(all[i].name, info.name) == 0)
            found = 1;
    }
    assert_true(found);
    n = 0; /* room for none */
    assert_int_equal(vkla_enumerate_devices(all, &n), VKLA_SUCCESS);
    assert_int_equal(n, 0);
    free(all);
    assert_int_equal(vkla_enumerate_devices(NULL, NULL), VKLA_ERROR_NULL_POINTER);

    /* selection by a bogus name or index fails with NO_DEVICE and says why */
    const char *bogus[] = {"no-such-gpu-xyzzy", "9999"};
    for (int i = 0; i < 2; i++) {
        msg_log log = {0};
        vkla_context_desc desc = {0};
        desc.device = bogus[i];
        desc.message_fn = log_fn;
        desc.message_user = &log;
        vkla_context *c = (vkla_context *)&log; /* must be reset to NULL */
        vkla_result r = vkla_context_create(&desc, &c);
        if (r != VKLA_ERROR_NO_DEVICE)
            fail_msg("device '%s': got %s, expected VKLA_ERROR_NO_DEVICE", bogus[i],
                     vkla_result_string(r));
        assert_null(c);
        if (!log.last_error[0])
            fail_msg("device '%s': no error message", bogus[i]);
        if (!strstr(log.last_error, bogus[i]))
            fail_msg("device '%s': message \"%s\" does not name the selection", bogus[i],
                     log.last_error);
    }
    /* selection by a case-changed substring of the name and by index 0 works */
    {
        msg_log log = {0};
        char sub[8] = {0};
        for (int i = 0; i < 4 && info.name[i]; i++)
            sub[i] = (char)((info.name[i] >= 'a' && info.name[i] <= 'z') ? info.name[i] - 32 : info.name[i]);
        vkla_context *c = new_context(sub, NULL, 0, &log);
        vkla_context_destroy(c);
        c = new_context("0", NULL, 0, &log);
        vkla_context_destroy(c);
    }
    assert_int_equal(vkla_context_create(NULL, NULL), VKLA_ERROR_NULL_POINTER);
    th_check_validation();
}

/* A validation context created while the environment variable name is value (its previous
 * value, or its absence, restored right after creation). */
static vkla_context *context_with_env(const char *name, const char *value, msg_log *log)
{
    const char *prev = getenv(name);
    char *saved = prev ? strdup(prev) : NULL;
    setenv(name, value, 1);
    vkla_context_desc desc = {0};
    desc.validation = 1;
    desc.message_fn = log_fn;
    desc.message_user = log;
    vkla_context *c = NULL;
    vkla_result r = vkla_context_create(&desc, &c);
    if (saved)
        setenv(name, saved, 1);
    else
        unsetenv(name);
    free(saved);
    if (r != VKLA_SUCCESS)
        fail_msg("context with %s=%s: %s: %s", name, value, vkla_result_string(r),
                 log->last_error);
    return c;
}

/* The scratch bound of calls split along T: VKLA_MAX_SCRATCH at creation (a malformed value
 * fails the creation with a message naming it), then vkla_context_set_scratch_limit. */
static void test_scratch_limit(void **state)
{
    (void)state;
    const char *bad[] = {"12k", "-1", "4095", ""};
    for (int i = 0; i < 3; i++) {
        msg_log log = {0};
        setenv("VKLA_MAX_SCRATCH", bad[i], 1);
        vkla_context_desc desc = {0};
        desc.message_fn = log_fn;
        desc.message_user = &log;
        vkla_context *c = (vkla_context *)&log;
        vkla_result r = vkla_context_create(&desc, &c);
        unsetenv("VKLA_MAX_SCRATCH");
        if (r != VKLA_ERROR_INVALID_ARGUMENT)
            fail_msg("VKLA_MAX_SCRATCH=%s: got %s", bad[i], vkla_result_string(r));
        assert_null(c);
        if (!strstr(log.last_error, "VKLA_MAX_SCRATCH"))
            fail_msg("VKLA_MAX_SCRATCH=%s: message \"%s\" does not name it", bad[i],
                     log.last_error);
    }
    msg_log log = {0};
    vkla_context *c = context_with_env("VKLA_MAX_SCRATCH", bad[3], &log); /* empty: unset */
    assert_int_equal(vkla_context_scratch_limit(c), 1ull << 30);
    vkla_context_destroy(c);
    c = context_with_env("VKLA_MAX_SCRATCH", "65536", &log);
    assert_int_equal(vkla_context_scratch_limit(c), 65536);
    assert_int_equal(vkla_context_set_scratch_limit(c, 4096), VKLA_SUCCESS);
    assert_int_equal(vkla_context_scratch_limit(c), 4096);
    assert_int_equal(vkla_context_set_scratch_limit(c, 4095), VKLA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkla_last_error(c), "4095"));
    assert_int_equal(vkla_context_scratch_limit(c), 4096);
    assert_int_equal(vkla_context_set_scratch_limit(c, 0), VKLA_SUCCESS); /* the default */
    assert_int_equal(vkla_context_scratch_limit(c), 65536);
    assert_int_equal(vkla_context_set_scratch_limit(NULL, 4096), VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_context_scratch_limit(NULL), 0);
    vkla_context_destroy(c);
}

static void test_env_storage16(void **state)
{
    (void)state;
    msg_log log = {0};
    vkla_context *c = context_with_env("VKLA_STORAGE16", "0", &log);
    vkla_device_info info;
    assert_int_equal(vkla_context_device_info(c, &info), VKLA_SUCCESS);
    assert_int_equal(info.fp16_storage, 0);
    assert_non_null(strstr(info.variant, "storage16=off"));

    uint64_t s[4] = {1, 4, 1, 16};
    vkla_buffer *b = NULL;
    assert_int_equal(vkla_buffer_create(c, 4 * 128, &b), VKLA_SUCCESS);
    const vkla_dtype dts[2] = {VKLA_DTYPE_F16, VKLA_DTYPE_BF16};
    for (int i = 0; i < 2; i++) {
        vkla_linear_attn_args a = {0};
        a.q = vkla_tensor_make(b, 0, dts[i], 4, s);
        a.k = vkla_tensor_make(b, 128, dts[i], 4, s);
        a.v = vkla_tensor_make(b, 256, dts[i], 4, s);
        a.o = vkla_tensor_make(b, 384, dts[i], 4, s);
        for (int f = 0; f < 2; f++) {
            a.form = f ? VKLA_FORM_RECURRENT : VKLA_FORM_CHUNK;
            vkla_result r = vkla_linear_attn_run(c, &a);
            if (r != VKLA_ERROR_UNSUPPORTED)
                fail_msg("%s with VKLA_STORAGE16=0: got %s", vkla_dtype_name(dts[i]),
                         vkla_result_string(r));
            if (!mentions(vkla_last_error(c), vkla_dtype_name(dts[i])))
                fail_msg("message \"%s\" does not name %s", vkla_last_error(c),
                         vkla_dtype_name(dts[i]));
            uint64_t n = 0;
            assert_int_equal(vkla_linear_attn_scratch_size(c, &a, &n), VKLA_ERROR_UNSUPPORTED);
        }
    }
    vkla_buffer_destroy(c, b);
    assert_int_equal(vkla_validation_message_count(c), 0);
    vkla_context_destroy(c);

    /* the override is read at creation only: the main context still has 16-bit storage
     * when the device does */
    vkla_device_info mi;
    vkla_context_device_info(th_ctx(), &mi);
    if (mi.fp16_storage)
        assert_null(strstr(mi.variant, "storage16=off"));
    th_check_validation();
}

/* With VK_INSTANCE_LAYERS naming the validation layer, the loader reports a general note
 * ("env var 'VK_INSTANCE_LAYERS' defined and adding layers ..."). That is no validation
 * message: neither counted nor passed on as VKLA_MESSAGE_VALIDATION. */
static void test_env_instance_layers(void **state)
{
    (void)state;
    msg_log log = {0};
    vkla_context *c = context_with_env("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation", &log);
    small_op_on(c, "context with VK_INSTANCE_LAYERS set");
    assert_int_equal(log.validation, 0);
    assert_int_equal(vkla_validation_message_count(c), 0);
    vkla_context_destroy(c);
    th_check_validation();
}

/* ------------------------------------------------------------------------------------------ */
/* vkla_context_profile: the launches of a bench call, off by default, never on run            */
/* ------------------------------------------------------------------------------------------ */

static void test_profile(void **state)
{
    (void)state;
    vkla_context *ctx = th_ctx();
    prob p;
    prob_init(&p, PB, PT, PH, PK, PV, P_G, 41);
    prob_ref(&p);
    dev d;
    dev_init(&d, &p);
    vkla_linear_attn_args a = dev_args(&d, &p, VKLA_FORM_CHUNK);
    double times[3];
    vkla_kernel_time kt[2];
    vkla_profile prof = {kt, 1, 0, 0, 0};

    /* kernels NULL with a capacity is refused; NULL with capacity 0 only counts */
    vkla_profile bad = {NULL, 4, 0, 0, 0};
    assert_int_equal(vkla_context_profile(ctx, &bad), VKLA_ERROR_NULL_POINTER);
    assert_true(mentions(vkla_last_error(ctx), "kernels"));
    vkla_profile counting = {NULL, 0, 0, 0, 0};
    assert_int_equal(vkla_context_profile(ctx, &counting), VKLA_SUCCESS);
    assert_int_equal(vkla_linear_attn_bench(ctx, &a, 0, 3, times), VKLA_SUCCESS);
    /* the chunk form: contributions, state pass, outputs */
    assert_int_equal(counting.count, 3);
    assert_int_equal(counting.reps, 3);

    /* fewer entries than launches: the first ones filled, count says how many there were;
     * warm-up 0 still works (the launches are listed in a warm-up copy of its own) */
    assert_int_equal(vkla_context_profile(ctx, &prof), VKLA_SUCCESS);
    assert_int_equal(vkla_linear_attn_bench(ctx, &a, 0, 3, times), VKLA_SUCCESS);
    assert_int_equal(prof.count, 3);
    assert_string_equal(kt[0].name, "linear_attn/chunk_state.f32");
    assert_true(kt[0].time_us > 0 && kt[0].time_us <= prof.total_us * 1.5);
    assert_true(kt[0].flops > 0 && kt[0].bytes > 0);
    assert_int_equal(kt[0].dispatches, 1);
    assert_int_equal(kt[0].groups[1], PH);
    prof.capacity = 2;
    assert_int_equal(vkla_linear_attn_bench(ctx, &a, 1, 3, times), VKLA_SUCCESS);
    assert_string_equal(kt[1].name, "linear_attn/chunk_scan.f32");
    assert_int_equal(kt[1].groups[2], PB); /* one workgroup row per sequence */

    /* a call that fails its checks leaves the context as it was */
    vkla_linear_attn_args wrong = a;
    wrong.chunk_size = 7;
    assert_int_equal(vkla_linear_attn_bench(ctx, &wrong, 1, 3, times), VKLA_ERROR_INVALID_ARGUMENT);

    /* _run is never profiled, and its result is the op's */
    prof.count = 999;
    run_ok(ctx, &a, "run with the profile set");
    assert_int_equal(prof.count, 999);
    check_tensor("run with the profile set: o", &d.o, p.o, p.nv);

    /* off: bench calls leave the profile alone */
    assert_int_equal(vkla_context_profile(ctx, NULL), VKLA_SUCCESS);
    assert_int_equal(vkla_linear_attn_bench(ctx, &a, 1, 3, times), VKLA_SUCCESS);
    assert_int_equal(prof.count, 999);
    assert_int_equal(vkla_context_profile(NULL, NULL), VKLA_ERROR_NULL_POINTER);

    dev_free(&d);
    prob_free(&p);
    th_check_validation();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_strings),
        cmocka_unit_test(test_error_paths),
        cmocka_unit_test(test_record_own_command_buffer),
        cmocka_unit_test(test_chunk_then_decode),
        cmocka_unit_test(test_fused_views),
        cmocka_unit_test(test_large_buffers),
        cmocka_unit_test(test_pipeline_cache),
        cmocka_unit_test(test_device_info),
        cmocka_unit_test(test_env_storage16),
        cmocka_unit_test(test_scratch_limit),
        cmocka_unit_test(test_env_instance_layers),
        cmocka_unit_test(test_profile),
    };
    return cmocka_run_group_tests_name("api", tests, th_setup, th_teardown);
}
