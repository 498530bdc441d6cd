/*
 * vkla-embed-demo: vkla inside a graphics application that owns its Vulkan objects.
 *
 * The application (this file) loads Vulkan with its own volk, creates the instance (validation
 * layer with synchronization validation when available), the device (one queue family with
 * graphics and compute), an offscreen color image and a graphics pipeline. Two vkla contexts
 * are built on that device with vkla_context_create_external; they run two stacked
 * linear_attn layers as recurrent decode steps (T = 1 per stream per frame, state carried from
 * frame to frame in application buffers that vkla only wraps). Every frame is ONE command
 * buffer: update of the inputs, layer A (context A), layer B (context B, whose values are layer
 * A's outputs), the barrier, and a render pass whose fragment shader draws the states and the
 * output history as a heatmap. Frames are written as PNG files.
 *
 * It exits non-zero when: a validation message (a validation or performance warning or error,
 * or an error of any type; not the loader's general notes) was reported; the last
 * frame's outputs or states differ from the float64 CPU reference; two consecutive frames are
 * identical; vkla called a submit, wait or command-buffer/memory allocation function while
 * recording; or the application's volk function pointers changed across vkla context creation
 * and destruction.
 *
 *   vkla-embed-demo [--frames N] [--out DIR] [--device NAME] [--no-validation]
 *                   [--pipeline-cache FILE] [--verbose] [--omit-exit-barrier]
 *
 * VKLA_VALIDATION=1 requires the validation layer (fail if missing), =0 turns it off; by
 * default it is used when installed.
 */
#include <volk.h>

#include <vkla.h>
#include <vkla_ref.h>

#include <png.h>

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* SPIR-V of embed.vert and embed.frag, compiled at build time */
extern const unsigned char embed_vert_spv[];
extern const size_t embed_vert_spv_size;
extern const unsigned char embed_frag_spv[];
extern const size_t embed_frag_spv_size;

/* Problem size: NS streams decode one token per frame, NH heads, K x V state per head. */
enum { NS = 2, NH = 2, DK = 16, DV = 16, HIST = 16, IMG_W = 512, IMG_H = 384 };
#define STATE_ELEMS (NS * NH * DK * DV) /* one [N,H,K,V] state */
#define ROW_ELEMS (NS * NH * DV)        /* one frame's output [NS,1,H,V] */

/* What the application writes with vkCmdUpdateBuffer each frame. */
typedef struct frame_inputs {
    float q1[NS * NH * DK], k1[NS * NH * DK], v1[NS * NH * DV], g1[NS * NH];
    float q2[NS * NH * DK], k2[NS * NH * DK], gamma2[NH];
} frame_inputs;

/* Fragment shader parameters (push constants; matches embed.frag). */
typedef struct draw_params {
    uint32_t width, height, nseq, heads, kdim, vdim, hist_rows, frame, state_half, pad;
    float state_gain[2], out_gain[2]; /* colour scales of layers A and B (8-byte aligned) */
} draw_params;

/* ------------------------------------------------------------------------------------------ */
/* Application state                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct gbuf {
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceSize size;
    void *map;
} gbuf;

typedef struct layer {
    const char *name;
    vkla_context *ctx;
    /* the application's buffers, wrapped for this context */
    vkla_buffer *w_in, *w_state, *w_vsrc, *w_out, *w_scratch;
    gbuf *state, *vsrc, *out; /* app buffers: state (two halves), value source, output ring */
    gbuf scratch;             /* app-owned scratch, sized by vkla_linear_attn_scratch_size */
    uint64_t scratch_bytes;
    int varlen;               /* layer B packs its streams with cu_seqlens */
} layer;

typedef struct app {
    int frames, verbose;
    int omit_exit_barrier; /* negative test: sync validation must report the hazard */
    const char *out_dir, *device_sel, *cache_path;
    int validation; /* -1 auto, 0 off, 1 required */

    uint32_t api;
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice pd;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem;
    uint32_t qfam;
    VkDevice dev;
    VkQueue queue;

    /* what vkla asked for, enabled on the device and passed back to vkla */
    vkla_device_requirements req;
    const char *exts[VKLA_MAX_REQUIRED_EXTENSIONS];
    uint32_t next;
    VkPhysicalDeviceFeatures2 f2;
    VkPhysicalDevice16BitStorageFeatures f16s;
    VkPhysicalDeviceShaderFloat16Int8Features f16i8;
    VkPhysicalDeviceSubgroupSizeControlFeatures ssc;
    VkPhysicalDeviceHostQueryResetFeatures hqr;

    /* graphics */
    VkImage image;
    VkDeviceMemory image_mem;
    VkImageView view;
    VkRenderPass pass;
    VkFramebuffer fb;
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipe;
    VkDescriptorPool dpool;
    VkDescriptorSet set;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;

    /* buffers */
    gbuf inputs, state_a, state_b, hist_a, hist_b, readback;

    layer la, lb;
} app;

static uint32_t g_vk_messages; /* validation messages on the application's instance */
static int g_verbose;

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *d,
                                               void *user)
{
    (void)user;
    const char *text = d && d->pMessage ? d->pMessage : "(no text)";
    /* Counted (and a failure): validation and performance warnings and errors, and errors of
     * any type. General warnings are the loader's notes, such as "env var
     * 'VK_INSTANCE_LAYERS' defined and adding layers ...", shown only with --verbose. */
    if ((sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ||
        ((sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) &&
         (types & ~(VkDebugUtilsMessageTypeFlagsEXT)VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT))) {
        g_vk_messages++;
        fprintf(stderr, "[validation] %s\n", text);
    } else if (g_verbose) {
        fprintf(stderr, "[vulkan] %s\n", text);
    }
    return VK_FALSE;
}

static void on_vkla_message(void *user, vkla_message_severity sev, const char *text)
{
    const char *who = (const char *)user;
    if (sev == VKLA_MESSAGE_INFO && !g_verbose)
        return;
    static const char *names[] = {"info", "warning", "error", "validation"};
    fprintf(stderr, "[vkla %s %s] %s\n", who, names[(int)sev & 3], text);
}

#define VK_CHECK(call)                                                                          \
    do {                                                                                        \
        VkResult vr_ = (call);                                                                  \
        if (vr_ != VK_SUCCESS) {                                                                \
            fprintf(stderr, "embed-demo: %s failed (VkResult %d) at line %d\n", #call, (int)vr_,\
                    __LINE__);                                                                  \
            return 1;                                                                           \
        }                                                                                       \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Proof that the recorded path never submits, waits or allocates                              */
/*                                                                                             */
/* vkla loads its device functions through the vkGetDeviceProcAddr the application gives it.  */
/* The demo hands it spy_gdpa, which wraps the functions a recorder must never call; calling  */
/* one of them inside vkla_linear_attn_record counts as a violation.                          */
/* ------------------------------------------------------------------------------------------ */

static struct {
    int in_record;
    unsigned violations, outside;
    char last[64];
} g_spy;

static void spy_note(const char *name)
{
    if (g_spy.in_record) {
        g_spy.violations++;
        snprintf(g_spy.last, sizeof(g_spy.last), "%s", name);
    } else {
        g_spy.outside++;
    }
}

static PFN_vkQueueSubmit real_QueueSubmit;
static PFN_vkQueueSubmit2 real_QueueSubmit2;
static PFN_vkQueueWaitIdle real_QueueWaitIdle;
static PFN_vkDeviceWaitIdle real_DeviceWaitIdle;
static PFN_vkWaitForFences real_WaitForFences;
static PFN_vkAllocateCommandBuffers real_AllocateCommandBuffers;
static PFN_vkBeginCommandBuffer real_BeginCommandBuffer;
static PFN_vkEndCommandBuffer real_EndCommandBuffer;
static PFN_vkResetCommandBuffer real_ResetCommandBuffer;
static PFN_vkAllocateMemory real_AllocateMemory;
static PFN_vkCreateBuffer real_CreateBuffer;

static VKAPI_ATTR VkResult VKAPI_CALL spy_QueueSubmit(VkQueue q, uint32_t n, const VkSubmitInfo *s,
                                                      VkFence f)
{
    spy_note("vkQueueSubmit");
    return real_QueueSubmit(q, n, s, f);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_QueueSubmit2(VkQueue q, uint32_t n,
                                                       const VkSubmitInfo2 *s, VkFence f)
{
    spy_note("vkQueueSubmit2");
    return real_QueueSubmit2(q, n, s, f);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_QueueWaitIdle(VkQueue q)
{
    spy_note("vkQueueWaitIdle");
    return real_QueueWaitIdle(q);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_DeviceWaitIdle(VkDevice d)
{
    spy_note("vkDeviceWaitIdle");
    return real_DeviceWaitIdle(d);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_WaitForFences(VkDevice d, uint32_t n, const VkFence *f,
                                                        VkBool32 all, uint64_t timeout)
{
    spy_note("vkWaitForFences");
    return real_WaitForFences(d, n, f, all, timeout);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_AllocateCommandBuffers(
    VkDevice d, const VkCommandBufferAllocateInfo *i, VkCommandBuffer *c)
{
    spy_note("vkAllocateCommandBuffers");
    return real_AllocateCommandBuffers(d, i, c);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_BeginCommandBuffer(VkCommandBuffer c,
                                                             const VkCommandBufferBeginInfo *i)
{
    spy_note("vkBeginCommandBuffer");
    return real_BeginCommandBuffer(c, i);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_EndCommandBuffer(VkCommandBuffer c)
{
    spy_note("vkEndCommandBuffer");
    return real_EndCommandBuffer(c);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_ResetCommandBuffer(VkCommandBuffer c,
                                                             VkCommandBufferResetFlags f)
{
    spy_note("vkResetCommandBuffer");
    return real_ResetCommandBuffer(c, f);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_AllocateMemory(VkDevice d, const VkMemoryAllocateInfo *i,
                                                         const VkAllocationCallbacks *a,
                                                         VkDeviceMemory *m)
{
    spy_note("vkAllocateMemory");
    return real_AllocateMemory(d, i, a, m);
}
static VKAPI_ATTR VkResult VKAPI_CALL spy_CreateBuffer(VkDevice d, const VkBufferCreateInfo *i,
                                                       const VkAllocationCallbacks *a, VkBuffer *b)
{
    spy_note("vkCreateBuffer");
    return real_CreateBuffer(d, i, a, b);
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL spy_gdpa(VkDevice dev, const char *name)
{
    PFN_vkVoidFunction real = vkGetDeviceProcAddr(dev, name); /* the application's volk */
    if (!real)
        return NULL;
#define SPY(fn)                                                                                 \
    if (strcmp(name, "vk" #fn) == 0) {                                                          \
        real_##fn = (PFN_vk##fn)real;                                                           \
        return (PFN_vkVoidFunction)spy_##fn;                                                    \
    }
    SPY(QueueSubmit)
    SPY(QueueSubmit2)
    SPY(QueueWaitIdle)
    SPY(DeviceWaitIdle)
    SPY(WaitForFences)
    SPY(AllocateCommandBuffers)
    SPY(BeginCommandBuffer)
    SPY(EndCommandBuffer)
    SPY(ResetCommandBuffer)
    SPY(AllocateMemory)
    SPY(CreateBuffer)
#undef SPY
    return real;
}

/* ------------------------------------------------------------------------------------------ */
/* The application's volk globals, before and after vkla                                       */
/* ------------------------------------------------------------------------------------------ */

enum { VOLK_SNAP_FNS = 12 };
typedef struct volk_snapshot {
    VkInstance inst;
    VkDevice dev;
    PFN_vkVoidFunction fn[VOLK_SNAP_FNS];
} volk_snapshot;

static void volk_snapshot_take(volk_snapshot *s)
{
    s->inst = volkGetLoadedInstance();
    s->dev = volkGetLoadedDevice();
    PFN_vkVoidFunction f[VOLK_SNAP_FNS] = {
        (PFN_vkVoidFunction)vkGetInstanceProcAddr, (PFN_vkVoidFunction)vkCreateInstance,
        (PFN_vkVoidFunction)vkGetDeviceProcAddr,   (PFN_vkVoidFunction)vkCreateDevice,
        (PFN_vkVoidFunction)vkQueueSubmit,         (PFN_vkVoidFunction)vkCmdDispatch,
        (PFN_vkVoidFunction)vkCmdPipelineBarrier,  (PFN_vkVoidFunction)vkCmdPushDescriptorSetKHR,
        (PFN_vkVoidFunction)vkCreateComputePipelines, (PFN_vkVoidFunction)vkCmdDraw,
        (PFN_vkVoidFunction)vkCmdUpdateBuffer,     (PFN_vkVoidFunction)vkDestroyDevice};
    memcpy(s->fn, f, sizeof(f));
}

static int volk_snapshot_same(const volk_snapshot *a, const volk_snapshot *b)
{
    if (a->inst != b->inst || a->dev != b->dev)
        return 0;
    for (int i = 0; i < VOLK_SNAP_FNS; i++)
        if (a->fn[i] != b->fn[i])
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Instance, device, buffers                                                                   */
/* ------------------------------------------------------------------------------------------ */

static int has_layer(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkLayerProperties *l = calloc(n, sizeof(*l));
    int found = 0;
    if (l && vkEnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= strcmp(l[i].layerName, name) == 0;
    free(l);
    return found;
}

static int has_instance_ext(const char *layer, const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkExtensionProperties *e = calloc(n, sizeof(*e));
    int found = 0;
    if (e && vkEnumerateInstanceExtensionProperties(layer, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= strcmp(e[i].extensionName, name) == 0;
    free(e);
    return found;
}

static int create_instance(app *a)
{
    if (volkInitialize() != VK_SUCCESS) {
        fprintf(stderr, "embed-demo: no Vulkan loader (libvulkan.so.1)\n");
        return 1;
    }
    uint32_t ver = volkGetInstanceVersion();
    if (ver < VK_API_VERSION_1_1) {
        fprintf(stderr, "embed-demo: the Vulkan loader is older than 1.1\n");
        return 1;
    }
    a->api = ver < VK_API_VERSION_1_3 ? ver : VK_API_VERSION_1_3;

    const char *layer = "VK_LAYER_KHRONOS_validation";
    if (a->validation != 0) {
        int have = has_layer(layer) && has_instance_ext(layer, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
        if (!have && a->validation == 1) {
            fprintf(stderr, "embed-demo: validation requested but %s (with %s) is not installed "
                            "(Debian: vulkan-validationlayers)\n",
                    layer, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
            return 1;
        }
        a->validation = have;
    }
    const char *exts[4];
    uint32_t next = 0;
    VkInstanceCreateFlags flags = 0;
    if (has_instance_ext(NULL, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        exts[next++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    VkValidationFeatureEnableEXT enables[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT vf = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                  .enabledValidationFeatureCount = 1,
                                  .pEnabledValidationFeatures = enables};
    VkDebugUtilsMessengerCreateInfoEXT dci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .pNext = &vf,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_cb};
    if (a->validation) {
        exts[next++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        exts[next++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
    }
    VkApplicationInfo ai = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                            .pApplicationName = "vkla-embed-demo",
                            .pEngineName = "vkla-embed-demo",
                            .apiVersion = a->api};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = a->validation ? (const void *)&dci : NULL,
                                .flags = flags,
                                .pApplicationInfo = &ai,
                                .enabledLayerCount = a->validation ? 1 : 0,
                                .ppEnabledLayerNames = &layer,
                                .enabledExtensionCount = next,
                                .ppEnabledExtensionNames = exts};
    VK_CHECK(vkCreateInstance(&ici, NULL, &a->inst));
    volkLoadInstance(a->inst);
    if (a->validation) {
        dci.pNext = NULL;
        VK_CHECK(vkCreateDebugUtilsMessengerEXT(a->inst, &dci, NULL, &a->messenger));
    }
    return 0;
}

static int type_score(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
    default: return 0;
    }
}

/* A Vulkan 1.1 device with one queue family that does graphics and compute. */
static int pick_device(app *a)
{
    uint32_t n = 0;
    VK_CHECK(vkEnumeratePhysicalDevices(a->inst, &n, NULL));
    VkPhysicalDevice pds[16];
    if (n > 16)
        n = 16;
    VkResult vr = vkEnumeratePhysicalDevices(a->inst, &n, pds);
    if (vr != VK_SUCCESS && vr != VK_INCOMPLETE)
        return 1;
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties pr;
        vkGetPhysicalDeviceProperties(pds[i], &pr);
        if (pr.apiVersion < VK_API_VERSION_1_1)
            continue;
        if (a->device_sel && !strstr(pr.deviceName, a->device_sel))
            continue;
        uint32_t nq = 0;
        vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, NULL);
        VkQueueFamilyProperties qf[16];
        if (nq > 16)
            nq = 16;
        vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, qf);
        const VkQueueFlags want = VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT;
        for (uint32_t q = 0; q < nq; q++) {
            if ((qf[q].queueFlags & want) != want)
                continue;
            if (type_score(pr.deviceType) > best) {
                best = type_score(pr.deviceType);
                a->pd = pds[i];
                a->qfam = q;
                a->props = pr;
            }
            break;
        }
    }
    if (!a->pd) {
        fprintf(stderr, "embed-demo: no Vulkan 1.1 device with a graphics+compute queue%s%s\n",
                a->device_sel ? " matching " : "", a->device_sel ? a->device_sel : "");
        return 1;
    }
    vkGetPhysicalDeviceMemoryProperties(a->pd, &a->mem);
    return 0;
}

/* The device: the application's own needs (nothing beyond core here) plus exactly what
 * vkla_device_requirements_query reports for vkla's fast paths. */
static int create_device(app *a)
{
    if (vkla_device_requirements_query(a->inst, a->pd, vkGetInstanceProcAddr, &a->req) !=
        VKLA_SUCCESS) {
        fprintf(stderr, "embed-demo: vkla_device_requirements_query failed\n");
        return 1;
    }
    int pushd = 0;
    for (uint32_t i = 0; i < a->req.extension_count; i++) {
        a->exts[a->next++] = a->req.extensions[i];
        pushd |= strcmp(a->req.extensions[i], VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) == 0;
    }
    if (!pushd) {
        fprintf(stderr, "embed-demo: %s lacks %s, which vkla needs\n", a->props.deviceName,
                VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
        return 1;
    }
    a->f2 = (VkPhysicalDeviceFeatures2){.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    void **tail = &a->f2.pNext;
    if (a->req.storage_buffer_16bit_access) {
        a->f16s = (VkPhysicalDevice16BitStorageFeatures){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
            .storageBuffer16BitAccess = VK_TRUE};
        *tail = &a->f16s;
        tail = &a->f16s.pNext;
    }
    if (a->req.shader_float16 || a->req.shader_int8) {
        a->f16i8 = (VkPhysicalDeviceShaderFloat16Int8Features){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
            .shaderFloat16 = a->req.shader_float16 != 0,
            .shaderInt8 = a->req.shader_int8 != 0};
        *tail = &a->f16i8;
        tail = &a->f16i8.pNext;
    }
    if (a->req.subgroup_size_control || a->req.compute_full_subgroups) {
        a->ssc = (VkPhysicalDeviceSubgroupSizeControlFeatures){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
            .subgroupSizeControl = a->req.subgroup_size_control != 0,
            .computeFullSubgroups = a->req.compute_full_subgroups != 0};
        *tail = &a->ssc;
        tail = &a->ssc.pNext;
    }
    if (a->req.host_query_reset) {
        a->hqr = (VkPhysicalDeviceHostQueryResetFeatures){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_HOST_QUERY_RESET_FEATURES,
            .hostQueryReset = VK_TRUE};
        *tail = &a->hqr;
        tail = &a->hqr.pNext;
    }
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = a->qfam, .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &a->f2,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci,
                              .enabledExtensionCount = a->next, .ppEnabledExtensionNames = a->exts};
    VK_CHECK(vkCreateDevice(a->pd, &dci, NULL, &a->dev));
    volkLoadDevice(a->dev);
    vkGetDeviceQueue(a->dev, a->qfam, 0, &a->queue);
    return 0;
}

static int memory_type(const app *a, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < a->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (a->mem.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

static int gbuf_create(app *a, VkDeviceSize size, VkBufferUsageFlags usage, int host, gbuf *b)
{
    memset(b, 0, sizeof(*b));
    b->size = size;
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                              .usage = usage, .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VK_CHECK(vkCreateBuffer(a->dev, &bci, NULL, &b->buf));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(a->dev, b->buf, &req);
    int type = host ? memory_type(a, req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                                             VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
                    : memory_type(a, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type < 0)
        type = memory_type(a, req.memoryTypeBits, 0);
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type};
    VK_CHECK(vkAllocateMemory(a->dev, &mai, NULL, &b->mem));
    VK_CHECK(vkBindBufferMemory(a->dev, b->buf, b->mem, 0));
    if (host)
        VK_CHECK(vkMapMemory(a->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map));
    return 0;
}

static void gbuf_destroy(app *a, gbuf *b)
{
    if (b->buf)
        vkDestroyBuffer(a->dev, b->buf, NULL);
    if (b->mem)
        vkFreeMemory(a->dev, b->mem, NULL);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------------------------------ */
/* Graphics: offscreen image, render pass, pipeline                                            */
/* ------------------------------------------------------------------------------------------ */

static VkShaderModule make_module(app *a, const unsigned char *code, size_t size)
{
    VkShaderModuleCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = size, .pCode = (const uint32_t *)(const void *)code};
    VkShaderModule m = VK_NULL_HANDLE;
    if (vkCreateShaderModule(a->dev, &ci, NULL, &m) != VK_SUCCESS)
        return VK_NULL_HANDLE;
    return m;
}

static int create_graphics(app *a)
{
    const VkFormat fmt = VK_FORMAT_R8G8B8A8_UNORM;
    VkImageCreateInfo ii = {.sType = VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO,
                            .imageType = VK_IMAGE_TYPE_2D, .format = fmt,
                            .extent = {IMG_W, IMG_H, 1}, .mipLevels = 1, .arrayLayers = 1,
                            .samples = VK_SAMPLE_COUNT_1_BIT, .tiling = VK_IMAGE_TILING_OPTIMAL,
                            .usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT |
                                     VK_IMAGE_USAGE_TRANSFER_SRC_BIT,
                            .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
                            .initialLayout = VK_IMAGE_LAYOUT_UNDEFINED};
    VK_CHECK(vkCreateImage(a->dev, &ii, NULL, &a->image));
    VkMemoryRequirements req;
    vkGetImageMemoryRequirements(a->dev, a->image, &req);
    int type = memory_type(a, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type < 0)
        type = memory_type(a, req.memoryTypeBits, 0);
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type};
    VK_CHECK(vkAllocateMemory(a->dev, &mai, NULL, &a->image_mem));
    VK_CHECK(vkBindImageMemory(a->dev, a->image, a->image_mem, 0));
    VkImageViewCreateInfo vi = {.sType = VK_STRUCTURE_TYPE_IMAGE_VIEW_CREATE_INFO,
                                .image = a->image, .viewType = VK_IMAGE_VIEW_TYPE_2D,
                                .format = fmt,
                                .subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1}};
    VK_CHECK(vkCreateImageView(a->dev, &vi, NULL, &a->view));

    /* The image is cleared each frame (UNDEFINED -> color attachment) and ends in
     * TRANSFER_SRC for the copy to the readback buffer. */
    VkAttachmentDescription att = {.format = fmt, .samples = VK_SAMPLE_COUNT_1_BIT,
                                   .loadOp = VK_ATTACHMENT_LOAD_OP_CLEAR,
                                   .storeOp = VK_ATTACHMENT_STORE_OP_STORE,
                                   .stencilLoadOp = VK_ATTACHMENT_LOAD_OP_DONT_CARE,
                                   .stencilStoreOp = VK_ATTACHMENT_STORE_OP_DONT_CARE,
                                   .initialLayout = VK_IMAGE_LAYOUT_UNDEFINED,
                                   .finalLayout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL};
    VkAttachmentReference ref = {0, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL};
    VkSubpassDescription sub = {.pipelineBindPoint = VK_PIPELINE_BIND_POINT_GRAPHICS,
                                .colorAttachmentCount = 1, .pColorAttachments = &ref};
    VkSubpassDependency deps[2] = {
        /* the previous frame's copy out of the image before this frame's clear */
        {.srcSubpass = VK_SUBPASS_EXTERNAL, .dstSubpass = 0,
         .srcStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT,
         .dstStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT,
         .srcAccessMask = 0,
         .dstAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT},
        /* the rendering before the copy to the readback buffer */
        {.srcSubpass = 0, .dstSubpass = VK_SUBPASS_EXTERNAL,
         .srcStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT,
         .dstStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT,
         .srcAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT,
         .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT}};
    VkRenderPassCreateInfo rpi = {.sType = VK_STRUCTURE_TYPE_RENDER_PASS_CREATE_INFO,
                                  .attachmentCount = 1, .pAttachments = &att,
                                  .subpassCount = 1, .pSubpasses = &sub,
                                  .dependencyCount = 2, .pDependencies = deps};
    VK_CHECK(vkCreateRenderPass(a->dev, &rpi, NULL, &a->pass));
    VkFramebufferCreateInfo fbi = {.sType = VK_STRUCTURE_TYPE_FRAMEBUFFER_CREATE_INFO,
                                   .renderPass = a->pass, .attachmentCount = 1,
                                   .pAttachments = &a->view, .width = IMG_W, .height = IMG_H,
                                   .layers = 1};
    VK_CHECK(vkCreateFramebuffer(a->dev, &fbi, NULL, &a->fb));

    /* the fragment shader reads four storage buffers that vkla writes */
    VkDescriptorSetLayoutBinding b[4];
    for (uint32_t i = 0; i < 4; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_FRAGMENT_BIT};
    VkDescriptorSetLayoutCreateInfo dli = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = 4, .pBindings = b};
    VK_CHECK(vkCreateDescriptorSetLayout(a->dev, &dli, NULL, &a->dsl));
    VkPushConstantRange pcr = {VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(draw_params)};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                      .setLayoutCount = 1, .pSetLayouts = &a->dsl,
                                      .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    VK_CHECK(vkCreatePipelineLayout(a->dev, &pli, NULL, &a->layout));

    VkShaderModule vs = make_module(a, embed_vert_spv, embed_vert_spv_size);
    VkShaderModule fs = make_module(a, embed_frag_spv, embed_frag_spv_size);
    if (!vs || !fs) {
        fprintf(stderr, "embed-demo: vkCreateShaderModule failed\n");
        return 1;
    }
    VkPipelineShaderStageCreateInfo stages[2] = {
        {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
         .stage = VK_SHADER_STAGE_VERTEX_BIT, .module = vs, .pName = "main"},
        {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
         .stage = VK_SHADER_STAGE_FRAGMENT_BIT, .module = fs, .pName = "main"}};
    VkPipelineVertexInputStateCreateInfo vin = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_VERTEX_INPUT_STATE_CREATE_INFO};
    VkPipelineInputAssemblyStateCreateInfo ia = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_INPUT_ASSEMBLY_STATE_CREATE_INFO,
        .topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_LIST};
    VkViewport vp = {0, 0, (float)IMG_W, (float)IMG_H, 0, 1};
    VkRect2D sc = {{0, 0}, {IMG_W, IMG_H}};
    VkPipelineViewportStateCreateInfo vps = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_VIEWPORT_STATE_CREATE_INFO,
        .viewportCount = 1, .pViewports = &vp, .scissorCount = 1, .pScissors = &sc};
    VkPipelineRasterizationStateCreateInfo rs = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_RASTERIZATION_STATE_CREATE_INFO,
        .polygonMode = VK_POLYGON_MODE_FILL, .cullMode = VK_CULL_MODE_NONE,
        .frontFace = VK_FRONT_FACE_COUNTER_CLOCKWISE, .lineWidth = 1.0f};
    VkPipelineMultisampleStateCreateInfo ms = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_MULTISAMPLE_STATE_CREATE_INFO,
        .rasterizationSamples = VK_SAMPLE_COUNT_1_BIT};
    VkPipelineColorBlendAttachmentState cba = {
        .colorWriteMask = VK_COLOR_COMPONENT_R_BIT | VK_COLOR_COMPONENT_G_BIT |
                          VK_COLOR_COMPONENT_B_BIT | VK_COLOR_COMPONENT_A_BIT};
    VkPipelineColorBlendStateCreateInfo cb = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_COLOR_BLEND_STATE_CREATE_INFO,
        .attachmentCount = 1, .pAttachments = &cba};
    VkGraphicsPipelineCreateInfo gpi = {.sType = VK_STRUCTURE_TYPE_GRAPHICS_PIPELINE_CREATE_INFO,
                                        .stageCount = 2, .pStages = stages,
                                        .pVertexInputState = &vin, .pInputAssemblyState = &ia,
                                        .pViewportState = &vps, .pRasterizationState = &rs,
                                        .pMultisampleState = &ms, .pColorBlendState = &cb,
                                        .layout = a->layout, .renderPass = a->pass, .subpass = 0};
    VkResult vr = vkCreateGraphicsPipelines(a->dev, VK_NULL_HANDLE, 1, &gpi, NULL, &a->pipe);
    vkDestroyShaderModule(a->dev, vs, NULL);
    vkDestroyShaderModule(a->dev, fs, NULL);
    VK_CHECK(vr);

    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 4};
    VkDescriptorPoolCreateInfo dpi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                      .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps};
    VK_CHECK(vkCreateDescriptorPool(a->dev, &dpi, NULL, &a->dpool));
    VkDescriptorSetAllocateInfo dai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                       .descriptorPool = a->dpool, .descriptorSetCount = 1,
                                       .pSetLayouts = &a->dsl};
    VK_CHECK(vkAllocateDescriptorSets(a->dev, &dai, &a->set));
    const gbuf *src[4] = {&a->state_a, &a->state_b, &a->hist_a, &a->hist_b};
    VkDescriptorBufferInfo infos[4];
    VkWriteDescriptorSet w[4];
    for (uint32_t i = 0; i < 4; i++) {
        infos[i] = (VkDescriptorBufferInfo){src[i]->buf, 0, VK_WHOLE_SIZE};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstSet = a->set, .dstBinding = i, .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &infos[i]};
    }
    vkUpdateDescriptorSets(a->dev, 4, w, 0, NULL);

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = a->qfam};
    VK_CHECK(vkCreateCommandPool(a->dev, &pci, NULL, &a->pool));
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = a->pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    VK_CHECK(vkAllocateCommandBuffers(a->dev, &cai, &a->cmd));
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VK_CHECK(vkCreateFence(a->dev, &fci, NULL, &a->fence));
    return 0;
}

static int create_buffers(app *a)
{
    const VkBufferUsageFlags st = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                  VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                                  VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
    if (gbuf_create(a, sizeof(frame_inputs),
                    VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0,
                    &a->inputs) ||
        gbuf_create(a, 2 * STATE_ELEMS * sizeof(float), st, 0, &a->state_a) ||
        gbuf_create(a, 2 * STATE_ELEMS * sizeof(float), st, 0, &a->state_b) ||
        gbuf_create(a, HIST * ROW_ELEMS * sizeof(float), st, 0, &a->hist_a) ||
        gbuf_create(a, HIST * ROW_ELEMS * sizeof(float), st, 0, &a->hist_b) ||
        gbuf_create(a, (VkDeviceSize)IMG_W * IMG_H * 4 + (2 * ROW_ELEMS + 2 * STATE_ELEMS) * 4,
                    VK_BUFFER_USAGE_TRANSFER_DST_BIT, 1, &a->readback))
        return 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Inputs (deterministic functions of the frame number)                                        */
/* ------------------------------------------------------------------------------------------ */

static void gen_inputs(int f, frame_inputs *in)
{
    const float t = (float)f;
    for (int s = 0; s < NS; s++)
        for (int h = 0; h < NH; h++) {
            int r = s * NH + h;
            for (int i = 0; i < DK; i++) {
                float x = (float)i;
                in->q1[r * DK + i] = sinf(0.37f * t * (1.0f + 0.3f * (float)s) + 0.9f * x + 1.7f * (float)h);
                in->k1[r * DK + i] = 0.35f * cosf(0.23f * t * (1.0f + 0.5f * (float)h) + 0.45f * x * (float)(1 + s));
                in->q2[r * DK + i] = cosf(0.29f * t + 0.6f * x + (float)s + (float)h);
                in->k2[r * DK + i] = 0.35f * sinf(0.31f * t * (1.0f + 0.2f * (float)s) + 0.7f * x + (float)h);
            }
            for (int j = 0; j < DV; j++)
                in->v1[r * DV + j] = sinf(0.5f * t + 0.8f * (float)j + 2.1f * (float)s + (float)h);
            in->g1[r] = -0.05f - 0.25f * (0.5f + 0.5f * sinf(0.6f * t + (float)s + 2.0f * (float)h));
        }
    for (int h = 0; h < NH; h++) /* RetNet-style constant decay per head */
        in->gamma2[h] = logf(1.0f - powf(2.0f, -(float)(4 + h)));
}

/* ------------------------------------------------------------------------------------------ */
/* vkla layers                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static const int32_t cu_seqlens_b[NS + 1] = {0, 1, 2};

/* This frame's arguments. The state ping-pongs between the two halves of the state buffer:
 * h0 is half (f & 1), ht the other; the output goes to row f % HIST of the output ring. */
static void layer_args(const layer *L, int f, vkla_linear_attn_args *a)
{
    memset(a, 0, sizeof(*a));
    const uint64_t sh[4] = {NS, NH, DK, DV};
    const uint64_t half = STATE_ELEMS * sizeof(float);
    const uint64_t row = (uint64_t)(f % HIST) * ROW_ELEMS * sizeof(float);
    a->form = VKLA_FORM_RECURRENT;
    a->h0 = vkla_tensor_make(L->w_state, (uint64_t)(f & 1) * half, VKLA_DTYPE_F32, 4, sh);
    a->ht = vkla_tensor_make(L->w_state, (uint64_t)((f + 1) & 1) * half, VKLA_DTYPE_F32, 4, sh);
    if (!L->varlen) {
        /* layer A: NS batch rows of one token each, gate g per token and head */
        const uint64_t sqk[4] = {NS, 1, NH, DK}, sv[4] = {NS, 1, NH, DV}, sg[3] = {NS, 1, NH};
        a->q = vkla_tensor_make(L->w_in, offsetof(frame_inputs, q1), VKLA_DTYPE_F32, 4, sqk);
        a->k = vkla_tensor_make(L->w_in, offsetof(frame_inputs, k1), VKLA_DTYPE_F32, 4, sqk);
        a->v = vkla_tensor_make(L->w_in, offsetof(frame_inputs, v1), VKLA_DTYPE_F32, 4, sv);
        a->g = vkla_tensor_make(L->w_in, offsetof(frame_inputs, g1), VKLA_DTYPE_F32, 3, sg);
        a->o = vkla_tensor_make(L->w_out, row, VKLA_DTYPE_F32, 4, sv);
    } else {
        /* layer B: the same streams packed as NS sequences of one token (cu_seqlens, B = 1);
         * its values are layer A's outputs of this frame; constant decay g_gamma per head */
        const uint64_t sqk[4] = {1, NS, NH, DK}, sv[4] = {1, NS, NH, DV}, sgam[1] = {NH};
        a->q = vkla_tensor_make(L->w_in, offsetof(frame_inputs, q2), VKLA_DTYPE_F32, 4, sqk);
        a->k = vkla_tensor_make(L->w_in, offsetof(frame_inputs, k2), VKLA_DTYPE_F32, 4, sqk);
        a->v = vkla_tensor_make(L->w_vsrc, row, VKLA_DTYPE_F32, 4, sv);
        a->g_gamma = vkla_tensor_make(L->w_in, offsetof(frame_inputs, gamma2), VKLA_DTYPE_F32, 1, sgam);
        a->o = vkla_tensor_make(L->w_out, row, VKLA_DTYPE_F32, 4, sv);
        a->cu_seqlens = cu_seqlens_b;
        a->num_seqs = NS;
    }
    a->scratch = L->w_scratch;
}

static void layer_detach(app *a, layer *L)
{
    (void)a;
    if (!L->ctx)
        return;
    vkla_buffer *w[5] = {L->w_in, L->w_state, L->w_vsrc, L->w_out, L->w_scratch};
    for (int i = 0; i < 5; i++)
        vkla_buffer_destroy(L->ctx, w[i]);
    L->w_in = L->w_state = L->w_vsrc = L->w_out = L->w_scratch = NULL;
    vkla_context_destroy(L->ctx);
    L->ctx = NULL;
}

/* Builds the layer's vkla context on the application's device and wraps the application's
 * buffers for it. cache: pipeline cache contents from an earlier context (or NULL). */
static int layer_attach(app *a, layer *L, const void *cache, size_t cache_size)
{
    vkla_external_desc d;
    memset(&d, 0, sizeof(d));
    d.instance = a->inst;
    d.physical_device = a->pd;
    d.device = a->dev;
    d.queue_family_index = a->qfam;
    d.queue = a->queue;
    d.get_instance_proc_addr = vkGetInstanceProcAddr;
    d.get_device_proc_addr = spy_gdpa;
    d.api_version = a->api;
    d.enabled_extensions = a->exts;
    d.enabled_extension_count = a->next;
    d.enabled_features = &a->f2;
    d.message_fn = on_vkla_message;
    d.message_user = (void *)L->name;
    d.pipeline_cache_data = cache;
    d.pipeline_cache_size = cache_size;
    vkla_result r = vkla_context_create_external(&d, &L->ctx);
    if (r != VKLA_SUCCESS) {
        fprintf(stderr, "embed-demo: vkla_context_create_external (%s): %s\n", L->name,
                vkla_result_string(r));
        return 1;
    }
    if ((r = vkla_buffer_wrap(L->ctx, a->inputs.buf, 0, a->inputs.size, &L->w_in)) ||
        (r = vkla_buffer_wrap(L->ctx, L->state->buf, 0, L->state->size, &L->w_state)) ||
        (r = vkla_buffer_wrap(L->ctx, L->out->buf, 0, L->out->size, &L->w_out)) ||
        (L->vsrc && (r = vkla_buffer_wrap(L->ctx, L->vsrc->buf, 0, L->vsrc->size, &L->w_vsrc)))) {
        fprintf(stderr, "embed-demo: vkla_buffer_wrap (%s): %s\n", L->name, vkla_last_error(L->ctx));
        return 1;
    }
    /* scratch: ask how much this call needs; the recorded path never allocates */
    vkla_linear_attn_args args;
    layer_args(L, 0, &args);
    if ((r = vkla_linear_attn_scratch_size(L->ctx, &args, &L->scratch_bytes)) != VKLA_SUCCESS) {
        fprintf(stderr, "embed-demo: scratch size (%s): %s\n", L->name, vkla_last_error(L->ctx));
        return 1;
    }
    if (L->scratch_bytes) {
        if (!L->scratch.buf &&
            gbuf_create(a, L->scratch_bytes,
                        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0,
                        &L->scratch))
            return 1;
        if ((r = vkla_buffer_wrap(L->ctx, L->scratch.buf, 0, L->scratch.size, &L->w_scratch))) {
            fprintf(stderr, "embed-demo: vkla_buffer_wrap scratch (%s): %s\n", L->name,
                    vkla_last_error(L->ctx));
            return 1;
        }
    }
    return 0;
}

static int layer_record(layer *L, VkCommandBuffer cmd, int f)
{
    vkla_linear_attn_args args;
    layer_args(L, f, &args);
    g_spy.in_record = 1;
    vkla_result r = vkla_linear_attn_record(L->ctx, cmd, &args);
    g_spy.in_record = 0;
    if (r != VKLA_SUCCESS) {
        fprintf(stderr, "embed-demo: vkla_linear_attn_record (%s): %s: %s\n", L->name,
                vkla_result_string(r), vkla_last_error(L->ctx));
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* One frame = one command buffer                                                              */
/* ------------------------------------------------------------------------------------------ */

static void barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = src_access, .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* readback layout: pixels, then o_A row, o_B row, state A (ht), state B (ht) */
#define RB_PIXELS 0
#define RB_OA ((VkDeviceSize)IMG_W * IMG_H * 4)
#define RB_OB (RB_OA + ROW_ELEMS * 4)
#define RB_SA (RB_OB + ROW_ELEMS * 4)
#define RB_SB (RB_SA + STATE_ELEMS * 4)

static int record_frame(app *a, int f)
{
    VkCommandBuffer cmd = a->cmd;
    VK_CHECK(vkResetCommandBuffer(cmd, 0));
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VK_CHECK(vkBeginCommandBuffer(cmd, &bi));

    /* 1. The previous frame's reads and writes (vkla's compute, the fragment shader, the
     *    copies) before this frame's transfers and compute. A real engine with frames in
     *    flight needs this too. */
    barrier(cmd,
            VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT,
            VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);

    /* 2. The application's input update (and zero states on the first frame). */
    if (f == 0) {
        vkCmdFillBuffer(cmd, a->state_a.buf, 0, VK_WHOLE_SIZE, 0);
        vkCmdFillBuffer(cmd, a->state_b.buf, 0, VK_WHOLE_SIZE, 0);
        vkCmdFillBuffer(cmd, a->hist_a.buf, 0, VK_WHOLE_SIZE, 0);
        vkCmdFillBuffer(cmd, a->hist_b.buf, 0, VK_WHOLE_SIZE, 0);
    }
    frame_inputs in;
    gen_inputs(f, &in);
    vkCmdUpdateBuffer(cmd, a->inputs.buf, 0, sizeof(in), &in);

    /* 3. vkla's entry contract: the app's writes visible to compute-shader reads (and the
     *    earlier reads of the outputs ordered before compute writes: step 1). */
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);

    /* 4. Layer A on context A. */
    if (layer_record(&a->la, cmd, f))
        return 1;
    /* 5. A's exit contract = B's entry contract: A's outputs are B's values. */
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    /* 6. Layer B on context B, same command buffer. */
    if (layer_record(&a->lb, cmd, f))
        return 1;
    /* 7. vkla's exit contract: outputs and states to the fragment shader and the copies. */
    if (!a->omit_exit_barrier)
        barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT);

    /* 8. The numbers for the final check. */
    const VkDeviceSize row = (VkDeviceSize)(f % HIST) * ROW_ELEMS * 4;
    const VkDeviceSize ht = (VkDeviceSize)((f + 1) & 1) * STATE_ELEMS * 4;
    VkBufferCopy c1 = {row, RB_OA, ROW_ELEMS * 4}, c2 = {row, RB_OB, ROW_ELEMS * 4};
    VkBufferCopy c3 = {ht, RB_SA, STATE_ELEMS * 4}, c4 = {ht, RB_SB, STATE_ELEMS * 4};
    vkCmdCopyBuffer(cmd, a->hist_a.buf, a->readback.buf, 1, &c1);
    vkCmdCopyBuffer(cmd, a->hist_b.buf, a->readback.buf, 1, &c2);
    vkCmdCopyBuffer(cmd, a->state_a.buf, a->readback.buf, 1, &c3);
    vkCmdCopyBuffer(cmd, a->state_b.buf, a->readback.buf, 1, &c4);

    /* 9. The render pass: a heatmap of the states and the output history. */
    VkClearValue clear = {.color = {{0.0f, 0.0f, 0.0f, 1.0f}}};
    VkRenderPassBeginInfo rbi = {.sType = VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO,
                                 .renderPass = a->pass, .framebuffer = a->fb,
                                 .renderArea = {{0, 0}, {IMG_W, IMG_H}},
                                 .clearValueCount = 1, .pClearValues = &clear};
    vkCmdBeginRenderPass(cmd, &rbi, VK_SUBPASS_CONTENTS_INLINE);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, a->pipe);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, a->layout, 0, 1, &a->set, 0,
                            NULL);
    draw_params dp = {IMG_W, IMG_H, NS, NH, DK, DV, HIST, (uint32_t)f, (uint32_t)((f + 1) & 1),
                      0, {0.8f, 0.4f}, {1.2f, 0.5f}};
    vkCmdPushConstants(cmd, a->layout, VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(dp), &dp);
    vkCmdDraw(cmd, 3, 1, 0, 0);
    vkCmdEndRenderPass(cmd);

    /* 10. The frame to the host. */
    VkBufferImageCopy ic = {.bufferOffset = RB_PIXELS,
                            .imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1},
                            .imageExtent = {IMG_W, IMG_H, 1}};
    vkCmdCopyImageToBuffer(cmd, a->image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, a->readback.buf,
                           1, &ic);
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
            VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    VK_CHECK(vkEndCommandBuffer(cmd));
    return 0;
}

static int submit_and_wait(app *a)
{
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &a->cmd};
    VK_CHECK(vkResetFences(a->dev, 1, &a->fence));
    VK_CHECK(vkQueueSubmit(a->queue, 1, &si, a->fence));
    VK_CHECK(vkWaitForFences(a->dev, 1, &a->fence, VK_TRUE, UINT64_MAX));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* PNG                                                                                         */
/* ------------------------------------------------------------------------------------------ */

static int write_png(const char *path, const uint8_t *rgba, int w, int h)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        fprintf(stderr, "embed-demo: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(fp);
        return 1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(fp);
        fprintf(stderr, "embed-demo: libpng failed writing %s\n", path);
        return 1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGBA,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(rgba + (size_t)y * (size_t)w * 4));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return fclose(fp) == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The float64 reference of both layers over all frames                                        */
/* ------------------------------------------------------------------------------------------ */

static double compare(const char *what, const double *ref, const float *gpu, size_t n)
{
    double maxd = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(ref[i] - (double)gpu[i]);
        if (!(d <= maxd))
            maxd = d;
    }
    double e = vkla_ref_all_finite(gpu, n) ? vkla_ref_nmse(ref, gpu, n) : INFINITY;
    printf("  %-22s NMSE %.2e  max |diff| %.2e\n", what, e, maxd);
    return e;
}

static int check_reference(const app *a)
{
    const int F = a->frames;
    const size_t nqk = (size_t)NS * F * NH * DK, nv = (size_t)NS * F * NH * DV;
    double *q1 = calloc(nqk, 8), *k1 = calloc(nqk, 8), *v1 = calloc(nv, 8);
    double *g1 = calloc((size_t)NS * F * NH, 8), *o1 = calloc(nv, 8);
    double *q2 = calloc(nqk, 8), *k2 = calloc(nqk, 8), *o2 = calloc(nv, 8);
    double *ht1 = calloc(STATE_ELEMS, 8), *ht2 = calloc(STATE_ELEMS, 8);
    double gam[NH], last_o1[ROW_ELEMS], last_o2[ROW_ELEMS];
    int rc = 1;
    if (!q1 || !k1 || !v1 || !g1 || !o1 || !q2 || !k2 || !o2 || !ht1 || !ht2)
        goto done;
    /* frame t's token of stream s is token t of batch row s ([NS, F, H, X]) */
    for (int t = 0; t < F; t++) {
        frame_inputs in;
        gen_inputs(t, &in);
        for (int s = 0; s < NS; s++)
            for (int h = 0; h < NH; h++) {
                size_t r = (size_t)s * NH + (size_t)h, tok = ((size_t)s * F + (size_t)t) * NH + (size_t)h;
                for (int i = 0; i < DK; i++) {
                    q1[tok * DK + i] = in.q1[r * DK + i];
                    k1[tok * DK + i] = in.k1[r * DK + i];
                    q2[tok * DK + i] = in.q2[r * DK + i];
                    k2[tok * DK + i] = in.k2[r * DK + i];
                }
                for (int j = 0; j < DV; j++)
                    v1[tok * DV + j] = in.v1[r * DV + j];
                g1[tok] = in.g1[r];
            }
        if (t == 0)
            for (int h = 0; h < NH; h++)
                gam[h] = in.gamma2[h];
    }
    vkla_ref_linear_attn_args ra;
    memset(&ra, 0, sizeof(ra));
    ra.B = NS, ra.T = F, ra.H = NH, ra.K = DK, ra.V = DV;
    ra.q = q1, ra.k = k1, ra.v = v1, ra.g = g1;
    ra.scale = 1.0 / sqrt((double)DK);
    ra.o = o1, ra.ht = ht1;
    if (vkla_ref_linear_attn(&ra) != 0)
        goto done;
    ra.q = q2, ra.k = k2, ra.v = o1, ra.g = NULL, ra.g_gamma = gam;
    ra.o = o2, ra.ht = ht2;
    if (vkla_ref_linear_attn(&ra) != 0)
        goto done;
    for (int s = 0; s < NS; s++)
        for (int h = 0; h < NH; h++)
            for (int j = 0; j < DV; j++) {
                size_t tok = ((size_t)s * F + (size_t)(F - 1)) * NH + (size_t)h;
                last_o1[(s * NH + h) * DV + j] = o1[tok * DV + j];
                last_o2[(s * NH + h) * DV + j] = o2[tok * DV + j];
            }
    const uint8_t *rb = (const uint8_t *)a->readback.map;
    printf("check of frame %d against the float64 reference (all %d frames as one sequence):\n",
           F - 1, F);
    const double target = 1e-9;
    const double errs[4] = {
        compare("layer A output o", last_o1, (const float *)(const void *)(rb + RB_OA), ROW_ELEMS),
        compare("layer A state ht", ht1, (const float *)(const void *)(rb + RB_SA), STATE_ELEMS),
        compare("layer B output o", last_o2, (const float *)(const void *)(rb + RB_OB), ROW_ELEMS),
        compare("layer B state ht", ht2, (const float *)(const void *)(rb + RB_SB), STATE_ELEMS)};
    double e = 0;
    for (int i = 0; i < 4; i++)
        if (!(errs[i] <= e)) /* NaN counts as worst */
            e = errs[i];
    rc = e <= target ? 0 : 1;
    printf("numeric check: %s (worst NMSE %.2e, target %.0e)\n", rc ? "FAILED" : "passed", e, target);
done:
    free(q1), free(k1), free(v1), free(g1), free(o1), free(q2), free(k2), free(o2);
    free(ht1), free(ht2);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* main                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static void usage(void)
{
    printf("usage: vkla-embed-demo [--frames N] [--out DIR] [--device NAME] [--no-validation]\n"
           "                       [--pipeline-cache FILE] [--verbose] [--omit-exit-barrier]\n"
           "Renders N frames (default 8) of two vkla linear_attn decode layers, recorded into the\n"
           "application's own command buffer, as PNG heatmaps in DIR (default embed-frames).\n"
           "VKLA_VALIDATION=1 requires the validation layer (sync validation on), =0 disables it.\n"
           "--omit-exit-barrier leaves out the barrier after vkla (a negative test: synchronization\n"
           "validation must then report a hazard and the run fails).\n");
}

static void destroy_all(app *a)
{
    if (a->dev) {
        vkDeviceWaitIdle(a->dev);
        layer_detach(a, &a->la);
        layer_detach(a, &a->lb);
        gbuf_destroy(a, &a->la.scratch);
        gbuf_destroy(a, &a->lb.scratch);
        gbuf *bufs[6] = {&a->inputs, &a->state_a, &a->state_b, &a->hist_a, &a->hist_b, &a->readback};
        for (int i = 0; i < 6; i++)
            gbuf_destroy(a, bufs[i]);
        if (a->fence)
            vkDestroyFence(a->dev, a->fence, NULL);
        if (a->pool)
            vkDestroyCommandPool(a->dev, a->pool, NULL);
        if (a->dpool)
            vkDestroyDescriptorPool(a->dev, a->dpool, NULL);
        if (a->pipe)
            vkDestroyPipeline(a->dev, a->pipe, NULL);
        if (a->layout)
            vkDestroyPipelineLayout(a->dev, a->layout, NULL);
        if (a->dsl)
            vkDestroyDescriptorSetLayout(a->dev, a->dsl, NULL);
        if (a->fb)
            vkDestroyFramebuffer(a->dev, a->fb, NULL);
        if (a->pass)
            vkDestroyRenderPass(a->dev, a->pass, NULL);
        if (a->view)
            vkDestroyImageView(a->dev, a->view, NULL);
        if (a->image)
            vkDestroyImage(a->dev, a->image, NULL);
        if (a->image_mem)
            vkFreeMemory(a->dev, a->image_mem, NULL);
        vkDestroyDevice(a->dev, NULL);
        a->dev = VK_NULL_HANDLE;
    }
    if (a->messenger)
        vkDestroyDebugUtilsMessengerEXT(a->inst, a->messenger, NULL);
    if (a->inst)
        vkDestroyInstance(a->inst, NULL);
    a->messenger = VK_NULL_HANDLE;
    a->inst = VK_NULL_HANDLE;
}

static void *read_file(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    void *data = NULL;
    long n = -1;
    if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) > 0 && fseek(fp, 0, SEEK_SET) == 0) {
        data = malloc((size_t)n);
        if (data && fread(data, 1, (size_t)n, fp) != (size_t)n) {
            free(data);
            data = NULL;
        }
    }
    fclose(fp);
    *size = data ? (size_t)n : 0;
    return data;
}

/* Saves a context's VkPipelineCache contents (the size query, then the data). */
static void *get_cache(vkla_context *ctx, size_t *size)
{
    *size = 0;
    if (vkla_pipeline_cache_get(ctx, NULL, size) != VKLA_SUCCESS || *size == 0)
        return NULL;
    void *data = malloc(*size);
    if (data && vkla_pipeline_cache_get(ctx, data, size) != VKLA_SUCCESS) {
        free(data);
        data = NULL;
    }
    return data;
}

static int run(app *a)
{
    if (create_instance(a) || pick_device(a) || create_device(a))
        return 1;
    printf("device: %s, queue family %u (graphics + compute), validation %s\n",
           a->props.deviceName, a->qfam,
           a->validation ? "on (synchronization validation on)" : "off");
    printf("vkla asked for:");
    for (uint32_t i = 0; i < a->req.extension_count; i++)
        printf(" %s", a->req.extensions[i]);
    printf("%s%s%s%s\n", a->req.storage_buffer_16bit_access ? " storageBuffer16BitAccess" : "",
           a->req.shader_float16 ? " shaderFloat16" : "",
           a->req.subgroup_size_control ? " subgroupSizeControl" : "",
           a->req.host_query_reset ? " hostQueryReset" : "");
    if (create_buffers(a) || create_graphics(a))
        return 1;

    volk_snapshot before, after;
    volk_snapshot_take(&before);

    size_t cache_size = 0;
    void *cache = a->cache_path ? read_file(a->cache_path, &cache_size) : NULL;
    if (cache)
        printf("pipeline cache: %zu bytes from %s\n", cache_size, a->cache_path);
    a->la = (layer){.name = "A", .state = &a->state_a, .out = &a->hist_a};
    a->lb = (layer){.name = "B", .state = &a->state_b, .vsrc = &a->hist_a, .out = &a->hist_b,
                    .varlen = 1};
    int rc = layer_attach(a, &a->la, cache, cache_size) || layer_attach(a, &a->lb, cache, cache_size);
    free(cache);
    if (rc)
        return 1;
    printf("two vkla contexts on the application's device; scratch: A %llu bytes, B %llu bytes\n",
           (unsigned long long)a->la.scratch_bytes, (unsigned long long)a->lb.scratch_bytes);
    volk_snapshot_take(&after);
    if (!volk_snapshot_same(&before, &after)) {
        fprintf(stderr, "embed-demo: the application's volk globals changed when vkla contexts were created\n");
        return 1;
    }

    if (mkdir(a->out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "embed-demo: cannot create %s: %s\n", a->out_dir, strerror(errno));
        return 1;
    }
    const size_t npix = (size_t)IMG_W * IMG_H;
    uint8_t *prev = malloc(npix * 4);
    if (!prev)
        return 1;
    int same_frames = 0;
    const int reload_at = a->frames >= 2 ? a->frames / 2 : -1;
    for (int f = 0; f < a->frames && rc == 0; f++) {
        if (f == reload_at) {
            /* Destroy context B (saving its pipeline cache) and build it again from that cache,
             * while context A keeps running; the states live in application buffers. */
            size_t n = 0;
            void *data = get_cache(a->lb.ctx, &n);
            layer_detach(a, &a->lb);
            rc = layer_attach(a, &a->lb, data, n);
            free(data);
            if (rc)
                break;
            printf("frame %d: context B destroyed and re-created from its %zu-byte pipeline "
                   "cache; context A untouched\n", f, n);
        }
        if ((rc = record_frame(a, f)) != 0 || (rc = submit_and_wait(a)) != 0)
            break;
        const uint8_t *px = (const uint8_t *)a->readback.map + RB_PIXELS;
        char path[4096];
        snprintf(path, sizeof(path), "%s/frame_%03d.png", a->out_dir, f);
        if ((rc = write_png(path, px, IMG_W, IMG_H)) != 0)
            break;
        size_t changed = 0;
        for (size_t i = 0; f > 0 && i < npix; i++)
            changed += memcmp(px + 4 * i, prev + 4 * i, 4) != 0;
        memcpy(prev, px, npix * 4);
        if (f > 0 && changed < npix / 100)
            same_frames++;
        if (f > 0)
            printf("frame %d: %s (%.1f%% of pixels changed)\n", f, path,
                   100.0 * (double)changed / (double)npix);
        else
            printf("frame %d: %s\n", f, path);
    }
    free(prev);
    if (rc)
        return 1;
    int failed = 0;
    if (check_reference(a))
        failed = 1;
    if (same_frames) {
        fprintf(stderr, "embed-demo: %d frame(s) barely differ from the one before\n", same_frames);
        failed = 1;
    }
    if (g_spy.violations) {
        fprintf(stderr, "embed-demo: vkla called %u forbidden function(s) while recording (last: %s)\n",
                g_spy.violations, g_spy.last);
        failed = 1;
    } else {
        printf("recorded path: no submit, wait, command-buffer or memory allocation by vkla "
               "(%u such calls outside recording: context set-up and teardown)\n",
               g_spy.outside);
    }
    if (a->cache_path) {
        size_t n = 0;
        void *data = get_cache(a->la.ctx, &n);
        FILE *fp = data ? fopen(a->cache_path, "wb") : NULL;
        if (fp && fwrite(data, 1, n, fp) == n && fclose(fp) == 0)
            printf("pipeline cache: saved %zu bytes to %s\n", n, a->cache_path);
        else
            fprintf(stderr, "embed-demo: could not save the pipeline cache to %s\n", a->cache_path);
        free(data);
    }
    layer_detach(a, &a->la);
    layer_detach(a, &a->lb);
    volk_snapshot_take(&after);
    if (!volk_snapshot_same(&before, &after)) {
        fprintf(stderr, "embed-demo: the application's volk globals changed across vkla\n");
        failed = 1;
    } else {
        printf("application's volk: function pointers unchanged after vkla context creation "
               "and destruction\n");
    }
    return failed;
}

int main(int argc, char **argv)
{
    app a;
    memset(&a, 0, sizeof(a));
    a.frames = 8;
    a.out_dir = "embed-frames";
    a.validation = -1;
    const char *ev = getenv("VKLA_VALIDATION");
    if (ev && *ev)
        a.validation = strcmp(ev, "0") != 0 ? 1 : 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(s, "--frames") && more) {
            a.frames = atoi(argv[++i]);
        } else if (!strcmp(s, "--out") && more) {
            a.out_dir = argv[++i];
        } else if (!strcmp(s, "--device") && more) {
            a.device_sel = argv[++i];
        } else if (!strcmp(s, "--pipeline-cache") && more) {
            a.cache_path = argv[++i];
        } else if (!strcmp(s, "--no-validation")) {
            a.validation = 0;
        } else if (!strcmp(s, "--omit-exit-barrier")) {
            a.omit_exit_barrier = 1;
        } else if (!strcmp(s, "--verbose")) {
            a.verbose = 1;
        } else if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage();
            return 0;
        } else {
            fprintf(stderr, "embed-demo: unknown or incomplete argument '%s'\n", s);
            usage();
            return 2;
        }
    }
    if (a.frames < 1 || a.frames > 100000) {
        fprintf(stderr, "embed-demo: --frames must be >= 1\n");
        return 2;
    }
    if (!a.device_sel) {
        const char *d = getenv("VKLA_DEVICE");
        if (d && *d)
            a.device_sel = d;
    }
    g_verbose = a.verbose;
    int failed = run(&a);
    destroy_all(&a);
    if (g_vk_messages) {
        fprintf(stderr, "embed-demo: %u validation message(s)\n", g_vk_messages);
        failed = 1;
    } else if (a.validation) {
        printf("validation: 0 messages (synchronization validation on)\n");
    }
    printf("%s\n", failed ? "FAILED" : "OK");
    return failed ? 1 : 0;
}
