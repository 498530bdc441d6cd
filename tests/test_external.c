/* External contexts: the test owns the VkInstance (validation layer + its own debug messenger),
 * the VkDevice (created with exactly what vkla_device_requirements_query reports), the queue,
 * the buffers and the command buffers; vkla only borrows them. */
#include <vulkan/vulkan.h>

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PB = 2, PT = 70, PH = 2, PK = 16, PV = 16 };

/* ------------------------------------------------------------------------------------------ */
/* The application's Vulkan objects                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct app {
    uint32_t api;
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice pd;
    VkPhysicalDeviceMemoryProperties mem;
    VkPhysicalDeviceProperties props;
    uint32_t qfam;
    VkDevice dev;
    VkQueue queue;
    vkla_device_requirements req;
    const char *exts[VKLA_MAX_REQUIRED_EXTENSIONS];
    uint32_t next;
    VkPhysicalDeviceFeatures2 f2;
    VkPhysicalDevice16BitStorageFeatures f16s;
    VkPhysicalDeviceShaderFloat16Int8Features f16i8;
    VkPhysicalDeviceSubgroupSizeControlFeatures ssc;
    VkPhysicalDeviceHostQueryResetFeatures hqr;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
} app;

static app A;
static uint32_t g_vk_messages, g_vk_seen;

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *d,
                                               void *user)
{
    (void)user;
    /* as vkla counts them: not the loader's general notes (e.g. on VK_INSTANCE_LAYERS) */
    if ((sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ||
        ((sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) &&
         (types & ~(VkDebugUtilsMessageTypeFlagsEXT)VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT))) {
        g_vk_messages++;
        fprintf(stderr, "[app validation] %s\n", d && d->pMessage ? d->pMessage : "(none)");
    }
    return VK_FALSE;
}

static void check_messages(void)
{
    uint32_t fresh = g_vk_messages - g_vk_seen;
    g_vk_seen = g_vk_messages;
    if (fresh)
        fail_msg("%u validation message(s) on the application's instance (see stderr)", fresh);
}

/* vkla's messages: the last error is kept for checks */
typedef struct msg_log {
    char last_error[1024];
    int errors;
} msg_log;

static void log_fn(void *user, vkla_message_severity sev, const char *text)
{
    msg_log *l = (msg_log *)user;
    if (sev == VKLA_MESSAGE_ERROR) {
        l->errors++;
        snprintf(l->last_error, sizeof(l->last_error), "%s", text);
    } else if (sev != VKLA_MESSAGE_INFO) {
        fprintf(stderr, "[vkla] %s\n", text);
    }
}

static int setup(void **state)
{
    (void)state;
    uint32_t ver = VK_API_VERSION_1_0;
    if (vkEnumerateInstanceVersion(&ver) != VK_SUCCESS || ver < VK_API_VERSION_1_1) {
        fprintf(stderr, "the Vulkan loader is older than 1.1\n");
        return -1;
    }
    A.api = ver < VK_API_VERSION_1_3 ? ver : VK_API_VERSION_1_3;
    const char *layer = "VK_LAYER_KHRONOS_validation";
    const char *iexts[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    VkDebugUtilsMessengerCreateInfoEXT dci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_cb};
    VkApplicationInfo ai = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                            .pApplicationName = "vkla test_external", .apiVersion = A.api};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = &dci, .pApplicationInfo = &ai,
                                .enabledLayerCount = 1, .ppEnabledLayerNames = &layer,
                                .enabledExtensionCount = 1, .ppEnabledExtensionNames = iexts};
    VkResult vr = vkCreateInstance(&ici, NULL, &A.inst);
    if (vr != VK_SUCCESS) {
        fprintf(stderr, "vkCreateInstance with %s failed (%d)\n", layer, (int)vr);
        return -1;
    }
    PFN_vkCreateDebugUtilsMessengerEXT cdm =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(A.inst, "vkCreateDebugUtilsMessengerEXT");
    if (!cdm || cdm(A.inst, &dci, NULL, &A.messenger) != VK_SUCCESS)
        return -1;

    /* the first Vulkan 1.1 device with a compute queue (VKLA_DEVICE: a name substring) */
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(A.inst, &n, NULL);
    VkPhysicalDevice pds[16];
    if (n > 16)
        n = 16;
    vkEnumeratePhysicalDevices(A.inst, &n, pds);
    const char *want = getenv("VKLA_DEVICE");
    for (uint32_t i = 0; i < n && !A.pd; i++) {
        VkPhysicalDeviceProperties pr;
        vkGetPhysicalDeviceProperties(pds[i], &pr);
        if (pr.apiVersion < VK_API_VERSION_1_1)
            continue;
        if (want && *want && !strstr(pr.deviceName, want))
            continue;
        uint32_t nq = 0;
        vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, NULL);
        VkQueueFamilyProperties qf[16];
        if (nq > 16)
            nq = 16;
        vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, qf);
        for (uint32_t q = 0; q < nq; q++)
            if (qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) {
                A.pd = pds[i];
                A.qfam = q;
                A.props = pr;
                break;
            }
    }
    if (!A.pd) {
        fprintf(stderr, "no Vulkan 1.1 device with a compute queue\n");
        return -1;
    }
    vkGetPhysicalDeviceMemoryProperties(A.pd, &A.mem);
    fprintf(stderr, "device: %s\n", A.props.deviceName);

    /* enable exactly what vkla asks for */
    if (vkla_device_requirements_query(A.inst, A.pd, vkGetInstanceProcAddr, &A.req) != VKLA_SUCCESS)
        return -1;
    for (uint32_t i = 0; i < A.req.extension_count; i++)
        A.exts[A.next++] = A.req.extensions[i];
    A.f2 = (VkPhysicalDeviceFeatures2){.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    void **tail = &A.f2.pNext;
    if (A.req.storage_buffer_16bit_access) {
        A.f16s = (VkPhysicalDevice16BitStorageFeatures){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
            .storageBuffer16BitAccess = VK_TRUE};
        *tail = &A.f16s;
        tail = &A.f16s.pNext;
    }
    if (A.req.shader_float16 || A.req.shader_int8) {
        A.f16i8 = (VkPhysicalDeviceShaderFloat16Int8Features){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
            .shaderFloat16 = A.req.shader_float16 != 0, .shaderInt8 = A.req.shader_int8 != 0};
        *tail = &A.f16i8;
        tail = &A.f16i8.pNext;
    }
    if (A.req.subgroup_size_control || A.req.compute_full_subgroups) {
        A.ssc = (VkPhysicalDeviceSubgroupSizeControlFeatures){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
            .subgroupSizeControl = A.req.subgroup_size_control != 0,
            .computeFullSubgroups = A.req.compute_full_subgroups != 0};
        *tail = &A.ssc;
        tail = &A.ssc.pNext;
    }
    if (A.req.host_query_reset) {
        A.hqr = (VkPhysicalDeviceHostQueryResetFeatures){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_HOST_QUERY_RESET_FEATURES,
            .hostQueryReset = VK_TRUE};
        *tail = &A.hqr;
        tail = &A.hqr.pNext;
    }
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = A.qfam, .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci2 = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &A.f2,
                               .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci,
                               .enabledExtensionCount = A.next, .ppEnabledExtensionNames = A.exts};
    vr = vkCreateDevice(A.pd, &dci2, NULL, &A.dev);
    if (vr != VK_SUCCESS) {
        fprintf(stderr, "vkCreateDevice failed (%d)\n", (int)vr);
        return -1;
    }
    vkGetDeviceQueue(A.dev, A.qfam, 0, &A.queue);

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = A.qfam};
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (vkCreateCommandPool(A.dev, &pci, NULL, &A.pool) != VK_SUCCESS)
        return -1;
    cai.commandPool = A.pool;
    if (vkAllocateCommandBuffers(A.dev, &cai, &A.cmd) != VK_SUCCESS ||
        vkCreateFence(A.dev, &fci, NULL, &A.fence) != VK_SUCCESS)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (A.dev) {
        vkDeviceWaitIdle(A.dev);
        if (A.fence)
            vkDestroyFence(A.dev, A.fence, NULL);
        if (A.pool)
            vkDestroyCommandPool(A.dev, A.pool, NULL);
        vkDestroyDevice(A.dev, NULL);
    }
    if (A.messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT ddm = (PFN_vkDestroyDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(A.inst, "vkDestroyDebugUtilsMessengerEXT");
        ddm(A.inst, A.messenger, NULL);
    }
    if (A.inst)
        vkDestroyInstance(A.inst, NULL);
    if (g_vk_messages != g_vk_seen) {
        fprintf(stderr, "%u validation messages after the last test\n", g_vk_messages - g_vk_seen);
        return -1;
    }
    return 0;
}

static void cmd_begin(void)
{
    assert_int_equal(vkResetCommandBuffer(A.cmd, 0), VK_SUCCESS);
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    assert_int_equal(vkBeginCommandBuffer(A.cmd, &bi), VK_SUCCESS);
}

static void cmd_submit(void)
{
    assert_int_equal(vkEndCommandBuffer(A.cmd), VK_SUCCESS);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &A.cmd};
    assert_int_equal(vkResetFences(A.dev, 1, &A.fence), VK_SUCCESS);
    assert_int_equal(vkQueueSubmit(A.queue, 1, &si, A.fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(A.dev, 1, &A.fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
}

static void barrier(VkPipelineStageFlags src, VkAccessFlags sa, VkPipelineStageFlags dst,
                    VkAccessFlags da)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = sa,
                          .dstAccessMask = da};
    vkCmdPipelineBarrier(A.cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* One host-visible VkBuffer with its own memory, sub-allocated for tensors. */
typedef struct arena {
    VkBuffer buf;
    VkDeviceMemory mem;
    uint8_t *map;
    uint64_t size, used;
} arena;

static void arena_init(arena *a, uint64_t size)
{
    memset(a, 0, sizeof(*a));
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                              .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    assert_int_equal(vkCreateBuffer(A.dev, &bci, NULL, &a->buf), VK_SUCCESS);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(A.dev, a->buf, &req);
    const VkMemoryPropertyFlags want =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    int type = -1;
    for (uint32_t i = 0; i < A.mem.memoryTypeCount && type < 0; i++)
        if ((req.memoryTypeBits & (1u << i)) && (A.mem.memoryTypes[i].propertyFlags & want) == want)
            type = (int)i;
    assert_true(type >= 0);
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type};
    assert_int_equal(vkAllocateMemory(A.dev, &mai, NULL, &a->mem), VK_SUCCESS);
    assert_int_equal(vkBindBufferMemory(A.dev, a->buf, a->mem, 0), VK_SUCCESS);
    void *p = NULL;
    assert_int_equal(vkMapMemory(A.dev, a->mem, 0, VK_WHOLE_SIZE, 0, &p), VK_SUCCESS);
    a->map = p;
    a->size = size;
    memset(a->map, 0x7f, size);
}

/* a 256-byte aligned region (also a multiple of minStorageBufferOffsetAlignment) */
static uint64_t arena_alloc(arena *a, uint64_t bytes)
{
    uint64_t al = A.props.limits.minStorageBufferOffsetAlignment;
    if (al < 256)
        al = 256;
    uint64_t off = (a->used + al - 1) / al * al;
    assert_true(off + bytes <= a->size);
    a->used = off + bytes;
    return off;
}

static void arena_free(arena *a)
{
    vkUnmapMemory(A.dev, a->mem);
    vkDestroyBuffer(A.dev, a->buf, NULL);
    vkFreeMemory(A.dev, a->mem, NULL);
    memset(a, 0, sizeof(*a));
}

/* ------------------------------------------------------------------------------------------ */
/* Problems and tensors                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct prob {
    size_t nq, nv, ng, ns;
    double *q, *k, *v, *g, *h0;
    double *o, *ht;
} prob;

static void prob_ref_q(const prob *p, const double *q, double *o, double *ht)
{
    vkla_ref_linear_attn_args ra = {
        .B = PB, .T = PT, .H = PH, .K = PK, .V = PV, .q = q, .k = p->k, .v = p->v, .g = p->g,
        .h0 = p->h0, .scale = 1.0 / sqrt((double)PK), .eps = 1e-6, .o = o, .ht = ht};
    assert_int_equal(vkla_ref_linear_attn(&ra), 0);
}

static void prob_init(prob *p, uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->nq = (size_t)PB * PT * PH * PK;
    p->nv = (size_t)PB * PT * PH * PV;
    p->ng = (size_t)PB * PT * PH;
    p->ns = (size_t)PB * PH * PK * PV;
    th_rng r;
    th_seed(&r, seed);
    p->q = malloc(p->nq * 8);
    p->k = malloc(p->nq * 8);
    p->v = malloc(p->nv * 8);
    p->g = malloc(p->ng * 8);
    p->h0 = malloc(p->ns * 8);
    p->o = malloc(p->nv * 8);
    p->ht = malloc(p->ns * 8);
    th_fill_normal(&r, p->q, p->nq, 1.0);
    th_fill_normal(&r, p->k, p->nq, 1.0);
    th_unit_rows(p->k, p->nq / PK, PK);
    th_fill_normal(&r, p->v, p->nv, 1.0);
    th_fill_uniform(&r, p->g, p->ng, -1.0, 0.0);
    th_fill_normal(&r, p->h0, p->ns, 0.5);
    th_round(p->q, p->nq, VKLA_DTYPE_F32);
    th_round(p->k, p->nq, VKLA_DTYPE_F32);
    th_round(p->v, p->nv, VKLA_DTYPE_F32);
    th_round(p->g, p->ng, VKLA_DTYPE_F32);
    th_round(p->h0, p->ns, VKLA_DTYPE_F32);
    prob_ref_q(p, p->q, p->o, p->ht);
}

static void prob_free(prob *p)
{
    free(p->q); free(p->k); free(p->v); free(p->g); free(p->h0); free(p->o); free(p->ht);
}

static void put_f32(arena *ar, uint64_t off, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float f = x ? (float)x[i] : NAN;
        memcpy(ar->map + off + 4 * i, &f, 4);
    }
}

static void get_f32(const arena *ar, uint64_t off, float *out, size_t n)
{
    memcpy(out, ar->map + off, n * 4);
}

/* The op's tensors as regions of one arena, each wrapped as its own vkla_buffer. */
enum { T_Q, T_K, T_V, T_G, T_H0, T_O, T_HT, T_O2, T_HT2, T_COUNT };

typedef struct placed {
    uint64_t off[T_COUNT], bytes[T_COUNT];
    vkla_buffer *wrap[T_COUNT];
} placed;

static void place(placed *pl, arena *ar, const prob *p)
{
    const size_t cnt[T_COUNT] = {p->nq, p->nq, p->nv, p->ng, p->ns, p->nv, p->ns, p->nv, p->ns};
    const double *src[T_COUNT] = {p->q, p->k, p->v, p->g, p->h0, NULL, NULL, NULL, NULL};
    for (int i = 0; i < T_COUNT; i++) {
        pl->bytes[i] = cnt[i] * 4;
        pl->off[i] = arena_alloc(ar, pl->bytes[i] + 64); /* 64 guard bytes after each */
        put_f32(ar, pl->off[i], src[i], cnt[i]);
        pl->wrap[i] = NULL;
    }
}

static void wrap_all(placed *pl, vkla_context *ctx, arena *ar)
{
    for (int i = 0; i < T_COUNT; i++) {
        vkla_result r = vkla_buffer_wrap(ctx, ar->buf, pl->off[i], pl->bytes[i], &pl->wrap[i]);
        if (r != VKLA_SUCCESS)
            fail_msg("vkla_buffer_wrap: %s: %s", vkla_result_string(r), vkla_last_error(ctx));
        assert_true(vkla_buffer_vk(pl->wrap[i]) == ar->buf);
        assert_true(vkla_buffer_size(pl->wrap[i]) == pl->bytes[i]);
    }
}

static void unwrap_all(placed *pl, vkla_context *ctx)
{
    for (int i = 0; i < T_COUNT; i++)
        vkla_buffer_destroy(ctx, pl->wrap[i]);
    memset(pl->wrap, 0, sizeof(pl->wrap));
}

static vkla_linear_attn_args placed_args(const placed *pl, vkla_form form, int o_slot, int ht_slot,
                                         int q_slot)
{
    uint64_t sq[4] = {PB, PT, PH, PK}, sv[4] = {PB, PT, PH, PV}, sg[3] = {PB, PT, PH};
    uint64_t ss[4] = {PB, PH, PK, PV};
    vkla_linear_attn_args a;
    memset(&a, 0, sizeof(a));
    a.form = form;
    a.q = vkla_tensor_make(pl->wrap[q_slot], 0, VKLA_DTYPE_F32, 4, sq);
    a.k = vkla_tensor_make(pl->wrap[T_K], 0, VKLA_DTYPE_F32, 4, sq);
    a.v = vkla_tensor_make(pl->wrap[T_V], 0, VKLA_DTYPE_F32, 4, sv);
    a.g = vkla_tensor_make(pl->wrap[T_G], 0, VKLA_DTYPE_F32, 3, sg);
    a.h0 = vkla_tensor_make(pl->wrap[T_H0], 0, VKLA_DTYPE_F32, 4, ss);
    a.o = vkla_tensor_make(pl->wrap[o_slot], 0, VKLA_DTYPE_F32, 4, sv);
    a.ht = vkla_tensor_make(pl->wrap[ht_slot], 0, VKLA_DTYPE_F32, 4, ss);
    return a;
}

/* compare an arena region with a reference; the 64 bytes after it must be untouched */
static void check_region(const char *what, const arena *ar, uint64_t off, const double *ref,
                         size_t n)
{
    float *out = malloc(n * 4);
    get_f32(ar, off, out, n);
    th_assert_close(what, ref, out, n, 1e-9);
    free(out);
    for (int i = 0; i < 64; i++)
        if (ar->map[off + n * 4 + i] != 0x7f)
            fail_msg("%s: write past the end of the tensor", what);
}

static void check_download(const char *what, vkla_context *ctx, vkla_buffer *b, const double *ref,
                           size_t n)
{
    float *out = malloc(n * 4);
    vkla_result r = vkla_buffer_download(ctx, b, 0, out, n * 4);
    if (r != VKLA_SUCCESS)
        fail_msg("%s: download: %s: %s", what, vkla_result_string(r), vkla_last_error(ctx));
    th_assert_close(what, ref, out, n, 1e-9);
    free(out);
}

static void clear_outputs(arena *ar, const placed *pl)
{
    const int outs[4] = {T_O, T_HT, T_O2, T_HT2};
    for (int i = 0; i < 4; i++)
        memset(ar->map + pl->off[outs[i]], 0x7f, pl->bytes[outs[i]]);
}

static vkla_context *make_external(msg_log *log, int pass_gdpa)
{
    vkla_external_desc d;
    memset(&d, 0, sizeof(d));
    d.instance = A.inst;
    d.physical_device = A.pd;
    d.device = A.dev;
    d.queue_family_index = A.qfam;
    d.queue = A.queue;
    d.get_instance_proc_addr = vkGetInstanceProcAddr;
    d.get_device_proc_addr = pass_gdpa ? vkGetDeviceProcAddr : NULL;
    d.api_version = A.api;
    d.enabled_extensions = A.exts;
    d.enabled_extension_count = A.next;
    d.enabled_features = &A.f2;
    d.message_fn = log_fn;
    d.message_user = log;
    vkla_context *ctx = NULL;
    vkla_result r = vkla_context_create_external(&d, &ctx);
    if (r != VKLA_SUCCESS)
        fail_msg("vkla_context_create_external: %s: %s", vkla_result_string(r), log->last_error);
    assert_non_null(ctx);
    assert_true(vkla_context_vk_device(ctx) == A.dev);
    assert_true(vkla_context_vk_queue(ctx) == A.queue);
    assert_int_equal(vkla_context_queue_family(ctx), A.qfam);
    return ctx;
}

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void test_requirements(void **state)
{
    (void)state;
    assert_int_equal(A.req.min_api_version, VK_API_VERSION_1_1);
    int pushd = 0;
    for (uint32_t i = 0; i < A.req.extension_count; i++) {
        assert_non_null(A.req.extensions[i]);
        if (strcmp(A.req.extensions[i], VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) == 0)
            pushd = 1;
    }
    assert_true(pushd);
    vkla_device_requirements r;
    assert_int_equal(vkla_device_requirements_query(VK_NULL_HANDLE, A.pd, vkGetInstanceProcAddr, &r),
                     VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_device_requirements_query(A.inst, VK_NULL_HANDLE, vkGetInstanceProcAddr, &r),
                     VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_device_requirements_query(A.inst, A.pd, NULL, &r), VKLA_ERROR_NULL_POINTER);
    assert_int_equal(vkla_device_requirements_query(A.inst, A.pd, vkGetInstanceProcAddr, NULL),
                     VKLA_ERROR_NULL_POINTER);
    check_messages();
}

static void test_external_ops(void **state)
{
    (void)state;
    msg_log log = {0};
    vkla_context *ctx = make_external(&log, 0);
    vkla_device_info info;
    assert_int_equal(vkla_context_device_info(ctx, &info), VKLA_SUCCESS);
    assert_true(info.push_descriptor);
    assert_int_equal(info.fp16_storage, A.req.storage_buffer_16bit_access != 0);
    fprintf(stderr, "external context variant: %s\n", info.variant);

    prob p;
    prob_init(&p, 71);
    double *o2 = malloc(p.nv * 8), *ht2 = malloc(p.ns * 8), *q2 = malloc(p.nq * 8);
    memcpy(q2, p.o, p.nq * 8); /* K == V: the second call takes the first call's o as q */
    th_round(q2, p.nq, VKLA_DTYPE_F32);
    prob_ref_q(&p, q2, o2, ht2);

    arena ar, sc;
    arena_init(&ar, 1u << 20);
    placed pl;
    place(&pl, &ar, &p);
    wrap_all(&pl, ctx, &ar);
    /* v goes through vkla's upload path for wrapped (unmapped to vkla) buffers */
    memset(ar.map + pl.off[T_V], 0, pl.bytes[T_V]);
    {
        float *vf = malloc(p.nv * 4);
        for (size_t i = 0; i < p.nv; i++)
            vf[i] = (float)p.v[i];
        assert_int_equal(vkla_buffer_upload(ctx, pl.wrap[T_V], 0, vf, p.nv * 4), VKLA_SUCCESS);
        free(vf);
    }

    /* _run, both forms */
    const vkla_form forms[2] = {VKLA_FORM_CHUNK, VKLA_FORM_RECURRENT};
    for (int f = 0; f < 2; f++) {
        clear_outputs(&ar, &pl);
        vkla_linear_attn_args a = placed_args(&pl, forms[f], T_O, T_HT, T_Q);
        vkla_result r = vkla_linear_attn_run(ctx, &a);
        if (r != VKLA_SUCCESS)
            fail_msg("external _run %s: %s: %s", vkla_form_name(forms[f]), vkla_result_string(r),
                     log.last_error);
        char what[64];
        snprintf(what, sizeof(what), "external run %s: o", vkla_form_name(forms[f]));
        check_download(what, ctx, pl.wrap[T_O], p.o, p.nv);
        snprintf(what, sizeof(what), "external run %s: ht", vkla_form_name(forms[f]));
        check_download(what, ctx, pl.wrap[T_HT], p.ht, p.ns);
    }

    /* _record: chunk then recurrent (consuming the chunk output) into the app's command buffer,
     * with scratch in the app's own buffer at an offset */
    clear_outputs(&ar, &pl);
    vkla_linear_attn_args a1 = placed_args(&pl, VKLA_FORM_CHUNK, T_O, T_HT, T_Q);
    vkla_linear_attn_args a2 = placed_args(&pl, VKLA_FORM_RECURRENT, T_O2, T_HT2, T_O);
    uint64_t need = 0;
    assert_int_equal(vkla_linear_attn_scratch_size(ctx, &a1, &need), VKLA_SUCCESS);
    assert_true(need > 0);
    arena_init(&sc, need + 4096);
    vkla_buffer *scratch = NULL;
    assert_int_equal(vkla_buffer_wrap(ctx, sc.buf, 1024, need + 1024, &scratch), VKLA_SUCCESS);
    a1.scratch = scratch;
    a1.scratch_offset = 512;
    cmd_begin();
    assert_int_equal(vkla_linear_attn_record(ctx, A.cmd, &a1), VKLA_SUCCESS);
    barrier(VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    assert_int_equal(vkla_linear_attn_record(ctx, A.cmd, &a2), VKLA_SUCCESS);
    barrier(VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    cmd_submit();
    check_region("external record chunk: o", &ar, pl.off[T_O], p.o, p.nv);
    check_region("external record chunk: ht", &ar, pl.off[T_HT], p.ht, p.ns);
    check_region("external record recurrent on chunk's o: o", &ar, pl.off[T_O2], o2, p.nv);
    check_region("external record recurrent on chunk's o: ht", &ar, pl.off[T_HT2], ht2, p.ns);

    /* vkla's buffers on the app's device work too */
    vkla_buffer *own = NULL;
    assert_int_equal(vkla_buffer_create(ctx, 4096, &own), VKLA_SUCCESS);
    assert_int_equal(vkla_buffer_fill(ctx, own, 0, 4096, 0x01020304u), VKLA_SUCCESS);
    uint32_t w[4];
    assert_int_equal(vkla_buffer_download(ctx, own, 1000, w, 16), VKLA_SUCCESS);
    assert_int_equal(w[3], 0x01020304u);
    vkla_buffer_destroy(ctx, own);

    vkla_buffer_destroy(ctx, scratch);
    unwrap_all(&pl, ctx);
    assert_int_equal(log.errors, 0);
    vkla_context_destroy(ctx);

    /* the app's device still works after the context is gone */
    cmd_begin();
    vkCmdFillBuffer(A.cmd, ar.buf, pl.off[T_O], 256, 0xdeadbeefu);
    barrier(VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
    cmd_submit();
    uint32_t word;
    memcpy(&word, ar.map + pl.off[T_O] + 252, 4);
    assert_int_equal(word, 0xdeadbeefu);
    memcpy(&word, ar.map + pl.off[T_O] + 256, 4);
    assert_true(word != 0xdeadbeefu);

    arena_free(&sc);
    arena_free(&ar);
    prob_free(&p);
    free(o2); free(ht2); free(q2);
    check_messages();
}

static void test_two_contexts(void **state)
{
    (void)state;
    msg_log la = {0}, lb = {0};
    vkla_context *ca = make_external(&la, 0);
    vkla_context *cb = make_external(&lb, 1);
    prob p;
    prob_init(&p, 81);
    double *o2 = malloc(p.nv * 8), *ht2 = malloc(p.ns * 8), *q2 = malloc(p.nq * 8);
    memcpy(q2, p.o, p.nq * 8);
    th_round(q2, p.nq, VKLA_DTYPE_F32);
    prob_ref_q(&p, q2, o2, ht2);

    arena ar;
    arena_init(&ar, 1u << 20);
    placed pa, pb;
    place(&pa, &ar, &p);
    pb = pa; /* the same regions, wrapped again by the second context */
    wrap_all(&pa, ca, &ar);
    wrap_all(&pb, cb, &ar);

    /* one command buffer: context A's op, then context B's op on A's output */
    vkla_linear_attn_args a1 = placed_args(&pa, VKLA_FORM_RECURRENT, T_O, T_HT, T_Q);
    vkla_linear_attn_args a2 = placed_args(&pb, VKLA_FORM_RECURRENT, T_O2, T_HT2, T_O);
    cmd_begin();
    assert_int_equal(vkla_linear_attn_record(ca, A.cmd, &a1), VKLA_SUCCESS);
    barrier(VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    assert_int_equal(vkla_linear_attn_record(cb, A.cmd, &a2), VKLA_SUCCESS);
    barrier(VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    cmd_submit();
    check_region("context A: o", &ar, pa.off[T_O], p.o, p.nv);
    check_region("context A: ht", &ar, pa.off[T_HT], p.ht, p.ns);
    check_region("context B on A's o: o", &ar, pb.off[T_O2], o2, p.nv);
    check_region("context B on A's o: ht", &ar, pb.off[T_HT2], ht2, p.ns);

    /* destroying A leaves B working */
    unwrap_all(&pa, ca);
    vkla_context_destroy(ca);
    clear_outputs(&ar, &pb);
    a2 = placed_args(&pb, VKLA_FORM_RECURRENT, T_O2, T_HT2, T_Q);
    vkla_result r = vkla_linear_attn_run(cb, &a2);
    if (r != VKLA_SUCCESS)
        fail_msg("context B after A was destroyed: %s: %s", vkla_result_string(r), lb.last_error);
    check_download("context B after A was destroyed: o", cb, pb.wrap[T_O2], p.o, p.nv);
    check_download("context B after A was destroyed: ht", cb, pb.wrap[T_HT2], p.ht, p.ns);
    unwrap_all(&pb, cb);
    assert_int_equal(la.errors, 0);
    assert_int_equal(lb.errors, 0);
    vkla_context_destroy(cb);
    arena_free(&ar);
    prob_free(&p);
    free(o2); free(ht2); free(q2);
    check_messages();
}

static void expect_create_fail(const char *what, const vkla_external_desc *d, vkla_result want,
                               const char *needle)
{
    msg_log log = {0};
    vkla_external_desc dd = *d;
    dd.message_fn = log_fn;
    dd.message_user = &log;
    vkla_context *ctx = (vkla_context *)&log; /* must come back NULL */
    vkla_result r = vkla_context_create_external(&dd, &ctx);
    if (r != want)
        fail_msg("%s: got %s, expected %s (%s)", what, vkla_result_string(r),
                 vkla_result_string(want), log.last_error);
    assert_null(ctx);
    if (!log.last_error[0])
        fail_msg("%s: no message", what);
    if (needle && !strstr(log.last_error, needle))
        fail_msg("%s: message \"%s\" does not mention %s", what, log.last_error, needle);
}

static void test_external_errors(void **state)
{
    (void)state;
    vkla_external_desc good;
    memset(&good, 0, sizeof(good));
    good.instance = A.inst;
    good.physical_device = A.pd;
    good.device = A.dev;
    good.queue_family_index = A.qfam;
    good.queue = A.queue;
    good.get_instance_proc_addr = vkGetInstanceProcAddr;
    good.api_version = A.api;
    good.enabled_extensions = A.exts;
    good.enabled_extension_count = A.next;
    good.enabled_features = &A.f2;

    vkla_context *ctx = NULL;
    assert_int_equal(vkla_context_create_external(NULL, &ctx), VKLA_ERROR_NULL_POINTER);
    assert_null(ctx);
    assert_int_equal(vkla_context_create_external(&good, NULL), VKLA_ERROR_NULL_POINTER);

    vkla_external_desc d = good;
    d.instance = VK_NULL_HANDLE;
    expect_create_fail("NULL instance", &d, VKLA_ERROR_NULL_POINTER, "instance");
    d = good;
    d.device = VK_NULL_HANDLE;
    expect_create_fail("NULL device", &d, VKLA_ERROR_NULL_POINTER, "device");
    d = good;
    d.queue = VK_NULL_HANDLE;
    expect_create_fail("NULL queue", &d, VKLA_ERROR_NULL_POINTER, "queue");
    d = good;
    d.get_instance_proc_addr = NULL;
    expect_create_fail("NULL get_instance_proc_addr", &d, VKLA_ERROR_NULL_POINTER,
                       "get_instance_proc_addr");
    d = good;
    d.enabled_extensions = NULL;
    expect_create_fail("extension count without names", &d, VKLA_ERROR_NULL_POINTER,
                       "enabled_extensions");
    d = good;
    d.api_version = VK_API_VERSION_1_0;
    expect_create_fail("api_version 1.0", &d, VKLA_ERROR_UNSUPPORTED, "api_version");

    /* queue families: one without compute if the device has one; an index past the end */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(A.pd, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32)
        nq = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(A.pd, &nq, qf);
    int no_compute = -1;
    for (uint32_t i = 0; i < nq; i++)
        if (!(qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT))
            no_compute = (int)i;
    if (no_compute >= 0) {
        d = good;
        d.queue_family_index = (uint32_t)no_compute;
        expect_create_fail("queue family without compute", &d, VKLA_ERROR_INVALID_ARGUMENT,
                           "compute");
    } else {
        print_message("note: every queue family of this device has compute; skipping that case\n");
    }
    d = good;
    d.queue_family_index = nq;
    expect_create_fail("queue family index past the end", &d, VKLA_ERROR_INVALID_ARGUMENT,
                       "queue family");

    /* push descriptors not enabled */
    const char *without[VKLA_MAX_REQUIRED_EXTENSIONS];
    uint32_t nw = 0;
    for (uint32_t i = 0; i < A.next; i++)
        if (strcmp(A.exts[i], VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) != 0)
            without[nw++] = A.exts[i];
    d = good;
    d.enabled_extensions = without;
    d.enabled_extension_count = nw;
    expect_create_fail("push_descriptor not enabled", &d, VKLA_ERROR_UNSUPPORTED, "push_descriptor");

    /* no feature chain: valid, but 16-bit tensors are then unsupported */
    msg_log log = {0};
    d = good;
    d.enabled_features = NULL;
    d.message_fn = log_fn;
    d.message_user = &log;
    assert_int_equal(vkla_context_create_external(&d, &ctx), VKLA_SUCCESS);
    vkla_device_info info;
    vkla_context_device_info(ctx, &info);
    assert_int_equal(info.fp16_storage, 0);
    vkla_buffer *b = NULL;
    assert_int_equal(vkla_buffer_create(ctx, 1024, &b), VKLA_SUCCESS);
    uint64_t s[4] = {1, 4, 1, 16};
    vkla_linear_attn_args a = {0};
    a.form = VKLA_FORM_RECURRENT;
    a.q = vkla_tensor_make(b, 0, VKLA_DTYPE_F16, 4, s);
    a.k = vkla_tensor_make(b, 128, VKLA_DTYPE_F16, 4, s);
    a.v = vkla_tensor_make(b, 256, VKLA_DTYPE_F16, 4, s);
    a.o = vkla_tensor_make(b, 384, VKLA_DTYPE_F16, 4, s);
    assert_int_equal(vkla_linear_attn_run(ctx, &a), VKLA_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkla_last_error(ctx), "f16"));
    /* wrapping needs an aligned offset and a size */
    vkla_buffer *w = NULL;
    if (A.props.limits.minStorageBufferOffsetAlignment > 1)
        assert_int_equal(vkla_buffer_wrap(ctx, vkla_buffer_vk(b), 1, 64, &w),
                         VKLA_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkla_buffer_wrap(ctx, vkla_buffer_vk(b), 0, 0, &w), VKLA_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkla_buffer_wrap(ctx, VK_NULL_HANDLE, 0, 64, &w), VKLA_ERROR_NULL_POINTER);
    vkla_buffer_destroy(ctx, b);
    vkla_context_destroy(ctx);
    check_messages();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requirements),
        cmocka_unit_test(test_external_ops),
        cmocka_unit_test(test_two_contexts),
        cmocka_unit_test(test_external_errors),
    };
    return cmocka_run_group_tests_name("external", tests, setup, teardown);
}
