/* Contexts: standalone (vkla owns instance and device) and external (the app's device),
 * the capability probe, variant selection, errors and messages. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Results and messages                                                                        */
/* ------------------------------------------------------------------------------------------ */

const char *vkla_result_string(vkla_result r)
{
    switch (r) {
    case VKLA_SUCCESS: return "VKLA_SUCCESS";
    case VKLA_ERROR_NULL_POINTER: return "VKLA_ERROR_NULL_POINTER: a required pointer is NULL";
    case VKLA_ERROR_INVALID_ARGUMENT: return "VKLA_ERROR_INVALID_ARGUMENT: an option is out of range";
    case VKLA_ERROR_SHAPE_MISMATCH: return "VKLA_ERROR_SHAPE_MISMATCH: tensor shapes do not agree";
    case VKLA_ERROR_DTYPE_MISMATCH: return "VKLA_ERROR_DTYPE_MISMATCH: a tensor has the wrong dtype";
    case VKLA_ERROR_UNSUPPORTED: return "VKLA_ERROR_UNSUPPORTED: not supported on this device or build";
    case VKLA_ERROR_BAD_SEQLENS: return "VKLA_ERROR_BAD_SEQLENS: cu_seqlens is malformed";
    case VKLA_ERROR_OUT_OF_RANGE: return "VKLA_ERROR_OUT_OF_RANGE: a view reaches past its buffer";
    case VKLA_ERROR_SCRATCH_TOO_SMALL: return "VKLA_ERROR_SCRATCH_TOO_SMALL: scratch buffer too small";
    case VKLA_ERROR_NO_VULKAN: return "VKLA_ERROR_NO_VULKAN: the Vulkan loader is not available";
    case VKLA_ERROR_NO_DEVICE: return "VKLA_ERROR_NO_DEVICE: no matching Vulkan device";
    case VKLA_ERROR_OUT_OF_MEMORY: return "VKLA_ERROR_OUT_OF_MEMORY: allocation failed";
    case VKLA_ERROR_DEVICE_LOST: return "VKLA_ERROR_DEVICE_LOST: the device was lost";
    case VKLA_ERROR_VULKAN: return "VKLA_ERROR_VULKAN: a Vulkan call failed";
    case VKLA_ERROR_BAD_PIPELINE_CACHE: return "VKLA_ERROR_BAD_PIPELINE_CACHE: pipeline cache data rejected";
    }
    return "unknown vkla_result";
}

const char *vkla_last_error(const vkla_context *ctx) { return ctx ? ctx->err : ""; }

vkla_result vkla__fail(vkla_context *ctx, vkla_result r, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
        va_end(ap);
        if (ctx->msg_fn)
            ctx->msg_fn(ctx->msg_user, VKLA_MESSAGE_ERROR, ctx->err);
    }
    return r;
}

vkla_result vkla__vkfail(vkla_context *ctx, VkResult vr, const char *what)
{
    vkla_result r = VKLA_ERROR_VULKAN;
    if (vr == VK_ERROR_OUT_OF_HOST_MEMORY || vr == VK_ERROR_OUT_OF_DEVICE_MEMORY)
        r = VKLA_ERROR_OUT_OF_MEMORY;
    else if (vr == VK_ERROR_DEVICE_LOST)
        r = VKLA_ERROR_DEVICE_LOST;
    return vkla__fail(ctx, r, "%s failed (VkResult %d)", what, (int)vr);
}

void vkla__log(vkla_context *ctx, vkla_message_severity sev, const char *fmt, ...)
{
    if (!ctx || !ctx->msg_fn)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ctx->msg_fn(ctx->msg_user, sev, buf);
}

const char *vkla__getenv(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

uint32_t vkla_validation_message_count(const vkla_context *ctx)
{
    return ctx ? ctx->validation_count : 0;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data,
                                               void *user)
{
    vkla_context *ctx = (vkla_context *)user;
    const char *text = data && data->pMessage ? data->pMessage : "(no text)";
    /* Validation messages (counted): validation and performance warnings and errors, and
     * errors of any type. General warnings are the loader's notes (e.g. "env var
     * 'VK_INSTANCE_LAYERS' defined and adding layers ..."): passed on as information only. */
    if ((severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ||
        ((severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) &&
         (types & ~(VkDebugUtilsMessageTypeFlagsEXT)VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT))) {
        ctx->validation_count++;
        if (ctx->msg_fn)
            ctx->msg_fn(ctx->msg_user, VKLA_MESSAGE_VALIDATION, text);
    } else if (ctx->msg_fn) {
        ctx->msg_fn(ctx->msg_user, VKLA_MESSAGE_INFO, text);
    }
    return VK_FALSE;
}

/* ------------------------------------------------------------------------------------------ */
/* Capability probe                                                                            */
/* ------------------------------------------------------------------------------------------ */

static bool has_ext(const VkExtensionProperties *e, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(e[i].extensionName, name) == 0)
            return true;
    return false;
}

/* Supported features and properties of a physical device, written into caps and info. */
typedef struct probe_result {
    vkla_caps caps;                 /* "supported" values */
    bool ext_push_descriptor, ext_subgroup_size_control, ext_float16_int8, ext_16bit_storage;
    bool ext_host_query_reset, ext_driver_properties, ext_coopmat_khr, ext_coopmat_nv;
    bool ext_bf16;
    bool feat_size_control, feat_full_subgroups;
} probe_result;

static void probe_device(const vkla_instance_fns *vki, VkPhysicalDevice pd, uint32_t inst_api,
                         probe_result *p)
{
    memset(p, 0, sizeof(*p));
    vkla_caps *c = &p->caps;
    vki->GetPhysicalDeviceProperties(pd, &c->props);
    vki->GetPhysicalDeviceMemoryProperties(pd, &c->mem);
    uint32_t api = c->props.apiVersion < inst_api ? c->props.apiVersion : inst_api;
    c->api_version = api;

    uint32_t n = 0;
    vki->EnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
    VkExtensionProperties *ext = calloc(n ? n : 1, sizeof(*ext));
    if (ext)
        vki->EnumerateDeviceExtensionProperties(pd, NULL, &n, ext);
    else
        n = 0;
    p->ext_push_descriptor = has_ext(ext, n, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    p->ext_subgroup_size_control = api >= VK_API_VERSION_1_3 ||
                                   has_ext(ext, n, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    p->ext_float16_int8 = api >= VK_API_VERSION_1_2 ||
                          has_ext(ext, n, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
    p->ext_16bit_storage = true; /* core in 1.1 */
    p->ext_host_query_reset = api >= VK_API_VERSION_1_2 ||
                              has_ext(ext, n, VK_EXT_HOST_QUERY_RESET_EXTENSION_NAME);
    p->ext_driver_properties = api >= VK_API_VERSION_1_2 ||
                               has_ext(ext, n, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
    p->ext_coopmat_khr = has_ext(ext, n, "VK_KHR_cooperative_matrix");
    p->ext_coopmat_nv = has_ext(ext, n, "VK_NV_cooperative_matrix");
    p->ext_bf16 = has_ext(ext, n, "VK_KHR_shader_bfloat16");
    free(ext);

    /* features */
    VkPhysicalDevice16BitStorageFeatures f16s = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16i8 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
    VkPhysicalDeviceSubgroupSizeControlFeatures ssc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
    VkPhysicalDeviceHostQueryResetFeatures hqr = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_HOST_QUERY_RESET_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f16s};
    void **tail = &f16s.pNext;
    if (p->ext_float16_int8) { *tail = &f16i8; tail = &f16i8.pNext; }
    if (p->ext_subgroup_size_control) { *tail = &ssc; tail = &ssc.pNext; }
    if (p->ext_host_query_reset) { *tail = &hqr; tail = &hqr.pNext; }
    vki->GetPhysicalDeviceFeatures2(pd, &f2);
    c->storage16 = f16s.storageBuffer16BitAccess;
    c->float16 = f16i8.shaderFloat16;
    c->int8 = f16i8.shaderInt8;
    p->feat_size_control = ssc.subgroupSizeControl;
    p->feat_full_subgroups = ssc.computeFullSubgroups;
    c->host_query_reset = hqr.hostQueryReset;
    c->push_descriptor = p->ext_push_descriptor;
    c->coopmat = p->ext_coopmat_khr || p->ext_coopmat_nv;
    c->bf16_arith = p->ext_bf16;

    /* properties */
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceSubgroupSizeControlProperties sscp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sg};
    tail = &sg.pNext;
    if (p->ext_subgroup_size_control) { *tail = &sscp; tail = &sscp.pNext; }
    if (p->ext_driver_properties) { *tail = &drv; tail = &drv.pNext; }
    vki->GetPhysicalDeviceProperties2(pd, &p2);
    c->subgroup_size = sg.subgroupSize;
    c->subgroup_min = p->ext_subgroup_size_control ? sscp.minSubgroupSize : sg.subgroupSize;
    c->subgroup_max = p->ext_subgroup_size_control ? sscp.maxSubgroupSize : sg.subgroupSize;
    bool compute_sg = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0;
    c->subgroup_arith = compute_sg && (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    c->subgroup_shuffle = compute_sg && (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    c->subgroup_clustered = compute_sg && (sg.supportedOperations & VK_SUBGROUP_FEATURE_CLUSTERED_BIT);
    c->subgroup_ballot = compute_sg && (sg.supportedOperations & VK_SUBGROUP_FEATURE_BALLOT_BIT);
    c->size_control = p->feat_size_control && p->ext_subgroup_size_control &&
                      (sscp.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT);
    if (p->ext_driver_properties) {
        snprintf(c->driver_name, sizeof(c->driver_name), "%s", drv.driverName);
        snprintf(c->driver_info, sizeof(c->driver_info), "%s", drv.driverInfo);
    } else {
        snprintf(c->driver_name, sizeof(c->driver_name), "unknown");
        snprintf(c->driver_info, sizeof(c->driver_info), "driver version 0x%x",
                 c->props.driverVersion);
    }
}

static void fill_info(const vkla_caps *c, const vkla_variants *v, vkla_device_info *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->name, sizeof(o->name), "%s", c->props.deviceName);
    o->vendor_id = c->props.vendorID;
    o->device_id = c->props.deviceID;
    o->device_type = (uint32_t)c->props.deviceType;
    snprintf(o->driver_name, sizeof(o->driver_name), "%s", c->driver_name);
    snprintf(o->driver_info, sizeof(o->driver_info), "%s", c->driver_info);
    o->driver_version = c->props.driverVersion;
    o->api_version = c->props.apiVersion;
    o->subgroup_size = c->subgroup_size;
    o->subgroup_min_size = c->subgroup_min;
    o->subgroup_max_size = c->subgroup_max;
    o->subgroup_arithmetic = c->subgroup_arith;
    o->subgroup_clustered = c->subgroup_clustered;
    o->max_shared_memory = c->props.limits.maxComputeSharedMemorySize;
    o->max_workgroup_invocations = c->props.limits.maxComputeWorkGroupInvocations;
    o->max_storage_buffer_range = c->props.limits.maxStorageBufferRange;
    o->min_storage_buffer_offset_alignment = c->props.limits.minStorageBufferOffsetAlignment;
    o->fp16_storage = c->storage16;
    o->fp16_arithmetic = c->float16;
    o->bf16_arithmetic = c->bf16_arith;
    o->int8_arithmetic = c->int8;
    o->cooperative_matrix = c->coopmat;
    o->push_descriptor = c->push_descriptor;
    o->timestamp_period_ns = c->props.limits.timestampPeriod;
    for (uint32_t i = 0; i < c->mem.memoryHeapCount; i++)
        if (c->mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
            o->device_local_bytes += c->mem.memoryHeaps[i].size;
    if (v)
        snprintf(o->variant, sizeof(o->variant), "%s ks=%u storage16=%s flat=%s",
                 v->subgroup ? "subgroup" : "shared", v->ks, c->storage16 ? "on" : "off",
                 v->flat ? "on" : "off");
}

/* Variant choice from the caps, with environment overrides:
 *   VKLA_SUBGROUP=0|1   force shared-memory / subgroup reductions
 *   VKLA_STORAGE16=0    act as if 16-bit storage were missing (f16/bf16 report UNSUPPORTED)
 *   VKLA_MAX_STORAGE_RANGE=bytes  act as if maxStorageBufferRange were at most this (at least
 *                       4096): long sequences split along T on any device
 *   VKLA_MAX_SCRATCH=bytes  the default scratch bound of calls that can run as pieces of T
 *                       (vkla_context_set_scratch_limit; at least 4096)
 *   VKLA_FLAT_KERNELS=0|1  force the tiled, looping kernel forms (0) or the straight-line
 *                       ones (1; the default on CPU devices, where a read inside a loop or a
 *                       branch costs one load per lane): the delta rule's state pass (one
 *                       dispatch per chunk step, for K > 96) and output step
 *   VKLA_SCAN_STEPS=0|1 force the delta rule's state pass into the loop (0) or the steps (1)
 *                       at any K */
/* A byte count of at least 4096 written in decimal digits only (strtoull alone takes "-1") */
static bool parse_bytes(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v < 4096)
        return false;
    *out = v;
    return true;
}

static vkla_result choose_variants(vkla_context *ctx)
{
    vkla_caps *c = &ctx->caps;
    const char *ms = vkla__getenv("VKLA_MAX_SCRATCH");
    ctx->scratch_limit_default = VKLA_DEFAULT_SCRATCH_LIMIT;
    if (ms && *ms && !parse_bytes(ms, &ctx->scratch_limit_default))
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "VKLA_MAX_SCRATCH=%s is not a byte count >= 4096", ms);
    ctx->scratch_limit = ctx->scratch_limit_default;
    const char *er = vkla__getenv("VKLA_MAX_STORAGE_RANGE");
    if (er && *er) {
        uint64_t v;
        if (!parse_bytes(er, &v))
            return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                              "VKLA_MAX_STORAGE_RANGE=%s is not a byte count >= 4096", er);
        if (v < c->props.limits.maxStorageBufferRange)
            c->props.limits.maxStorageBufferRange = (uint32_t)(v / 4 * 4);
    }
    const char *e16 = vkla__getenv("VKLA_STORAGE16");
    if (e16 && strcmp(e16, "0") == 0)
        c->storage16 = false;
    bool sg_ok = c->subgroup_arith && c->subgroup_size >= 4 && c->subgroup_size <= 128 &&
                 (c->size_control || c->subgroup_min == c->subgroup_max);
    const char *es = vkla__getenv("VKLA_SUBGROUP");
    bool want = sg_ok;
    if (es) {
        want = strcmp(es, "0") != 0;
        if (want && !sg_ok)
            return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                              "VKLA_SUBGROUP=1 but the device has no usable subgroup arithmetic "
                              "with a fixed subgroup size");
    }
    ctx->var.subgroup = want;
    const char *ef = vkla__getenv("VKLA_FLAT_KERNELS");
    ctx->var.flat = ef && *ef ? strcmp(ef, "0") != 0
                              : c->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    const char *esc = vkla__getenv("VKLA_SCAN_STEPS");
    ctx->var.scan_steps = esc && *esc ? strcmp(esc, "0") != 0 : -1;
    ctx->var.ks = want ? (c->size_control ? c->subgroup_size : c->subgroup_min) : 16;
    if (ctx->var.ks > 64)
        ctx->var.ks = 64;
    return VKLA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Shared context set-up                                                                       */
/* ------------------------------------------------------------------------------------------ */

static vkla_result finish_context(vkla_context *ctx, const void *cache_data, size_t cache_size)
{
    VkResult vr;
    vkla__load_device_table(&ctx->vk, ctx->vki.GetDeviceProcAddr, ctx->device);
    if (!ctx->vk.vkCreateComputePipelines || !ctx->vk.vkQueueSubmit)
        return vkla__fail(ctx, VKLA_ERROR_VULKAN, "could not load device functions");
    if (!ctx->caps.push_descriptor || !ctx->vk.vkCmdPushDescriptorSetKHR)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                          "VK_KHR_push_descriptor is required but not enabled on the device");
    if (ctx->queue == VK_NULL_HANDLE)
        ctx->vk.vkGetDeviceQueue(ctx->device, ctx->qfam, 0, &ctx->queue);

    vkla_result r = choose_variants(ctx);
    if (r != VKLA_SUCCESS)
        return r;

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = ctx->qfam};
    if ((vr = ctx->vk.vkCreateCommandPool(ctx->device, &pci, NULL, &ctx->pool)) != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = ctx->pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    if ((vr = ctx->vk.vkAllocateCommandBuffers(ctx->device, &cai, &ctx->cmd)) != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((vr = ctx->vk.vkCreateFence(ctx->device, &fci, NULL, &ctx->fence)) != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkCreateFence");

    VkPipelineCacheCreateInfo cci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                     .initialDataSize = cache_data ? cache_size : 0,
                                     .pInitialData = cache_data};
    vr = ctx->vk.vkCreatePipelineCache(ctx->device, &cci, NULL, &ctx->cache);
    if (vr != VK_SUCCESS && cache_data) {
        /* Data from another device or driver: start empty rather than fail. */
        vkla__log(ctx, VKLA_MESSAGE_WARNING, "pipeline cache data rejected; starting empty");
        cci.initialDataSize = 0;
        cci.pInitialData = NULL;
        vr = ctx->vk.vkCreatePipelineCache(ctx->device, &cci, NULL, &ctx->cache);
    }
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkCreatePipelineCache");

    r = vkla__buffer_alloc(ctx, 256, false, &ctx->dummy);
    if (r != VKLA_SUCCESS)
        return r;
    vkla__log(ctx, VKLA_MESSAGE_INFO, "vkla: device %s (%s), variant %s ks=%u",
              ctx->caps.props.deviceName, ctx->caps.driver_info,
              ctx->var.subgroup ? "subgroup" : "shared", ctx->var.ks);
    return VKLA_SUCCESS;
}

static void lowercase(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = 0;
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

static bool layer_available(const vkla_instance_fns *g, const char *name)
{
    uint32_t n = 0;
    if (!g->EnumerateInstanceLayerProperties || g->EnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS)
        return false;
    VkLayerProperties *l = calloc(n ? n : 1, sizeof(*l));
    bool found = false;
    if (l && g->EnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (strcmp(l[i].layerName, name) == 0)
                found = true;
    free(l);
    return found;
}

static bool instance_ext_available(const vkla_instance_fns *g, const char *layer, const char *name)
{
    uint32_t n = 0;
    if (g->EnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS)
        return false;
    VkExtensionProperties *e = calloc(n ? n : 1, sizeof(*e));
    bool found = false;
    if (e && g->EnumerateInstanceExtensionProperties(layer, &n, e) == VK_SUCCESS)
        found = has_ext(e, n, name);
    free(e);
    return found;
}

/* Opens the loader and creates an instance; used by contexts and by vkla_enumerate_devices. */
static vkla_result open_instance(vkla_context *ctx, bool validation, bool sync_validation)
{
    const char *names[] = {"libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !ctx->loader; i++)
        ctx->loader = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!ctx->loader)
        return vkla__fail(ctx, VKLA_ERROR_NO_VULKAN,
                          "could not load the Vulkan loader (libvulkan.so.1): %s", dlerror());
    PFN_vkGetInstanceProcAddr gipa;
    *(void **)&gipa = dlsym(ctx->loader, "vkGetInstanceProcAddr");
    if (!gipa)
        return vkla__fail(ctx, VKLA_ERROR_NO_VULKAN, "the Vulkan loader has no vkGetInstanceProcAddr");
    vkla_instance_fns g;
    memset(&g, 0, sizeof(g));
    vkla__load_instance_fns(&g, gipa, VK_NULL_HANDLE);
    if (!g.CreateInstance)
        return vkla__fail(ctx, VKLA_ERROR_NO_VULKAN, "the Vulkan loader has no vkCreateInstance");
    uint32_t ver = VK_API_VERSION_1_0;
    if (g.EnumerateInstanceVersion)
        g.EnumerateInstanceVersion(&ver);
    if (ver < VK_API_VERSION_1_1)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "the Vulkan loader is 1.0; vkla needs 1.1");
    uint32_t api = ver < VK_API_VERSION_1_3 ? ver : VK_API_VERSION_1_3;

    const char *exts[4];
    uint32_t next = 0;
    const char *layers[1];
    uint32_t nlay = 0;
    VkInstanceCreateFlags flags = 0;
    if (instance_ext_available(&g, NULL, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        exts[next++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    VkValidationFeatureEnableEXT vfe[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT vf = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                  .enabledValidationFeatureCount = 1,
                                  .pEnabledValidationFeatures = vfe};
    const void *pnext = NULL;
    if (validation) {
        const char *layer = "VK_LAYER_KHRONOS_validation";
        if (!layer_available(&g, layer))
            return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                              "validation requested but %s is not installed "
                              "(Debian: vulkan-validationlayers)", layer);
        layers[nlay++] = layer;
        exts[next++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        if (sync_validation &&
            instance_ext_available(&g, layer, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME)) {
            exts[next++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
            pnext = &vf;
        }
    }
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "vkla", .pEngineName = "vkla",
                             .apiVersion = api};
    VkDebugUtilsMessengerCreateInfoEXT dci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .pNext = pnext,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_cb,
        .pUserData = ctx};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = validation ? (const void *)&dci : NULL,
                                .flags = flags,
                                .pApplicationInfo = &app,
                                .enabledLayerCount = nlay, .ppEnabledLayerNames = layers,
                                .enabledExtensionCount = next, .ppEnabledExtensionNames = exts};
    VkResult vr = g.CreateInstance(&ici, NULL, &ctx->instance);
    if (vr == VK_ERROR_INCOMPATIBLE_DRIVER)
        return vkla__fail(ctx, VKLA_ERROR_NO_DEVICE, "no Vulkan driver is installed (vkCreateInstance: incompatible driver)");
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkCreateInstance");
    vkla__load_instance_fns(&ctx->vki, gipa, ctx->instance);
    ctx->vki.CreateInstance = g.CreateInstance;
    ctx->caps.api_version = api;
    if (validation && ctx->vki.CreateDebugUtilsMessengerEXT) {
        dci.pNext = NULL;
        vr = ctx->vki.CreateDebugUtilsMessengerEXT(ctx->instance, &dci, NULL, &ctx->messenger);
        if (vr != VK_SUCCESS)
            return vkla__vkfail(ctx, vr, "vkCreateDebugUtilsMessengerEXT");
    }
    return VKLA_SUCCESS;
}

static vkla_result list_physical(vkla_context *ctx, VkPhysicalDevice **out, uint32_t *count)
{
    uint32_t n = 0;
    VkResult vr = ctx->vki.EnumeratePhysicalDevices(ctx->instance, &n, NULL);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkEnumeratePhysicalDevices");
    if (n == 0)
        return vkla__fail(ctx, VKLA_ERROR_NO_DEVICE, "no Vulkan device found (is mesa-vulkan-drivers installed?)");
    *out = calloc(n, sizeof(VkPhysicalDevice));
    if (!*out)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    vr = ctx->vki.EnumeratePhysicalDevices(ctx->instance, &n, *out);
    if (vr != VK_SUCCESS && vr != VK_INCOMPLETE) {
        free(*out);
        return vkla__vkfail(ctx, vr, "vkEnumeratePhysicalDevices");
    }
    *count = n;
    return VKLA_SUCCESS;
}

static vkla_result select_device(vkla_context *ctx, const char *sel, VkPhysicalDevice *pds,
                                 uint32_t n, uint32_t *chosen)
{
    int best = -1, best_score = -1;
    bool by_index = sel && *sel;
    for (const char *p = sel; by_index && *p; p++)
        if (!isdigit((unsigned char)*p))
            by_index = false;
    if (by_index) {
        unsigned long idx = strtoul(sel, NULL, 10);
        if (idx >= n)
            return vkla__fail(ctx, VKLA_ERROR_NO_DEVICE, "device index %lu out of range (%u devices)", idx, n);
        *chosen = (uint32_t)idx;
        return VKLA_SUCCESS;
    }
    char want[256] = "";
    if (sel)
        lowercase(want, sel, sizeof(want));
    char names[1024] = "";
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties pr;
        ctx->vki.GetPhysicalDeviceProperties(pds[i], &pr);
        char lname[256];
        lowercase(lname, pr.deviceName, sizeof(lname));
        size_t len = strlen(names);
        snprintf(names + len, sizeof(names) - len, "%s%u: %s", i ? ", " : "", i, pr.deviceName);
        if (pr.apiVersion < VK_API_VERSION_1_1)
            continue;
        if (want[0] && !strstr(lname, want))
            continue;
        int s = type_score(pr.deviceType);
        if (s > best_score) {
            best_score = s;
            best = (int)i;
        }
    }
    if (best < 0)
        return vkla__fail(ctx, VKLA_ERROR_NO_DEVICE, "no Vulkan 1.1 device matches '%s' (devices: %s)",
                          sel ? sel : "", names);
    *chosen = (uint32_t)best;
    return VKLA_SUCCESS;
}

vkla_result vkla_context_create(const vkla_context_desc *desc, vkla_context **out)
{
    if (!out)
        return VKLA_ERROR_NULL_POINTER;
    *out = NULL;
    vkla_context_desc d;
    memset(&d, 0, sizeof(d));
    if (desc)
        d = *desc;
    vkla_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return VKLA_ERROR_OUT_OF_MEMORY;
    ctx->msg_fn = d.message_fn;
    ctx->msg_user = d.message_user;
    const char *ev = vkla__getenv("VKLA_VALIDATION");
    bool validation = d.validation || (ev && strcmp(ev, "0") != 0);
    const char *sel = d.device ? d.device : vkla__getenv("VKLA_DEVICE");

    vkla_result r = open_instance(ctx, validation, d.sync_validation);
    VkPhysicalDevice *pds = NULL;
    uint32_t n = 0, chosen = 0;
    if (r == VKLA_SUCCESS)
        r = list_physical(ctx, &pds, &n);
    if (r == VKLA_SUCCESS)
        r = select_device(ctx, sel, pds, n, &chosen);
    if (r != VKLA_SUCCESS)
        goto fail;
    ctx->phys = pds[chosen];
    free(pds);
    pds = NULL;

    probe_result pr;
    probe_device(&ctx->vki, ctx->phys, ctx->caps.api_version, &pr);
    uint32_t inst_api = ctx->caps.api_version;
    ctx->caps = pr.caps;
    (void)inst_api;

    /* queue: a compute family with timestamps, preferring one that also does graphics */
    uint32_t nq = 0;
    ctx->vki.GetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32)
        nq = 32;
    ctx->vki.GetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, qf);
    int fam = -1;
    for (uint32_t i = 0; i < nq && fam < 0; i++)
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[i].timestampValidBits)
            fam = (int)i;
    for (uint32_t i = 0; i < nq && fam < 0; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            fam = (int)i;
    if (fam < 0) {
        r = vkla__fail(ctx, VKLA_ERROR_NO_DEVICE, "device %s has no compute queue",
                       ctx->caps.props.deviceName);
        goto fail;
    }
    ctx->qfam = (uint32_t)fam;

    const char *exts[8];
    uint32_t next = 0;
    if (pr.ext_push_descriptor)
        exts[next++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    if (ctx->caps.api_version < VK_API_VERSION_1_3 && pr.ext_subgroup_size_control && pr.feat_size_control)
        exts[next++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
    if (ctx->caps.api_version < VK_API_VERSION_1_2 && pr.ext_float16_int8)
        exts[next++] = VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME;
    if (ctx->caps.api_version < VK_API_VERSION_1_2 && pr.ext_host_query_reset)
        exts[next++] = VK_EXT_HOST_QUERY_RESET_EXTENSION_NAME;
    if (ctx->caps.api_version < VK_API_VERSION_1_2 && pr.ext_driver_properties)
        exts[next++] = VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME;

    VkPhysicalDevice16BitStorageFeatures f16s = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
        .storageBuffer16BitAccess = ctx->caps.storage16};
    VkPhysicalDeviceShaderFloat16Int8Features f16i8 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
        .shaderFloat16 = ctx->caps.float16, .shaderInt8 = ctx->caps.int8};
    VkPhysicalDeviceSubgroupSizeControlFeatures ssc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .subgroupSizeControl = pr.feat_size_control, .computeFullSubgroups = pr.feat_full_subgroups};
    VkPhysicalDeviceHostQueryResetFeatures hqr = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_HOST_QUERY_RESET_FEATURES,
        .hostQueryReset = ctx->caps.host_query_reset};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f16s};
    void **tail = &f16s.pNext;
    if (pr.ext_float16_int8) { *tail = &f16i8; tail = &f16i8.pNext; }
    if (pr.ext_subgroup_size_control && pr.feat_size_control) { *tail = &ssc; tail = &ssc.pNext; }
    if (pr.ext_host_query_reset) { *tail = &hqr; tail = &hqr.pNext; }
    if (!(pr.ext_subgroup_size_control && pr.feat_size_control))
        ctx->caps.size_control = false;

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = ctx->qfam, .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f2,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci,
                              .enabledExtensionCount = next, .ppEnabledExtensionNames = exts};
    VkResult vr = ctx->vki.CreateDevice(ctx->phys, &dci, NULL, &ctx->device);
    if (vr != VK_SUCCESS) {
        r = vkla__vkfail(ctx, vr, "vkCreateDevice");
        goto fail;
    }
    r = finish_context(ctx, d.pipeline_cache_data, d.pipeline_cache_size);
    if (r != VKLA_SUCCESS)
        goto fail;
    *out = ctx;
    return VKLA_SUCCESS;
fail:
    free(pds);
    /* keep the message: the caller has no context to read it from, so it goes to message_fn */
    vkla_context_destroy(ctx);
    return r;
}

/* Walks the app's feature chain for the bits vkla cares about. */
static void read_enabled_features(const VkPhysicalDeviceFeatures2 *f, bool *storage16,
                                  bool *float16, bool *int8, bool *size_control, bool *hqr)
{
    for (const VkBaseInStructure *s = (const VkBaseInStructure *)f; s; s = s->pNext) {
        switch (s->sType) {
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES:
            *storage16 |= ((const VkPhysicalDevice16BitStorageFeatures *)s)->storageBuffer16BitAccess;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES:
            *storage16 |= ((const VkPhysicalDeviceVulkan11Features *)s)->storageBuffer16BitAccess;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES:
            *float16 |= ((const VkPhysicalDeviceShaderFloat16Int8Features *)s)->shaderFloat16;
            *int8 |= ((const VkPhysicalDeviceShaderFloat16Int8Features *)s)->shaderInt8;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES:
            *float16 |= ((const VkPhysicalDeviceVulkan12Features *)s)->shaderFloat16;
            *int8 |= ((const VkPhysicalDeviceVulkan12Features *)s)->shaderInt8;
            *hqr |= ((const VkPhysicalDeviceVulkan12Features *)s)->hostQueryReset;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES:
            *size_control |= ((const VkPhysicalDeviceSubgroupSizeControlFeatures *)s)->subgroupSizeControl;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES:
            *size_control |= ((const VkPhysicalDeviceVulkan13Features *)s)->subgroupSizeControl;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_HOST_QUERY_RESET_FEATURES:
            *hqr |= ((const VkPhysicalDeviceHostQueryResetFeatures *)s)->hostQueryReset;
            break;
        default:
            break;
        }
    }
}

vkla_result vkla_context_create_external(const vkla_external_desc *d, vkla_context **out)
{
    if (!out)
        return VKLA_ERROR_NULL_POINTER;
    *out = NULL;
    if (!d)
        return VKLA_ERROR_NULL_POINTER;
    vkla_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return VKLA_ERROR_OUT_OF_MEMORY;
    ctx->external = true;
    ctx->msg_fn = d->message_fn;
    ctx->msg_user = d->message_user;
    vkla_result r;
    if (!d->instance || !d->physical_device || !d->device || !d->queue || !d->get_instance_proc_addr) {
        r = vkla__fail(ctx, VKLA_ERROR_NULL_POINTER,
                       "external context: instance, physical_device, device, queue and "
                       "get_instance_proc_addr are required");
        goto fail;
    }
    if (d->enabled_extension_count && !d->enabled_extensions) {
        r = vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "external context: enabled_extensions is NULL");
        goto fail;
    }
    ctx->instance = d->instance;
    ctx->phys = d->physical_device;
    ctx->device = d->device;
    ctx->queue = d->queue;
    ctx->qfam = d->queue_family_index;
    vkla__load_instance_fns(&ctx->vki, d->get_instance_proc_addr, d->instance);
    if (d->get_device_proc_addr)
        ctx->vki.GetDeviceProcAddr = d->get_device_proc_addr;
    if (!ctx->vki.GetDeviceProcAddr || !ctx->vki.GetPhysicalDeviceProperties2) {
        r = vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "external context: instance lacks Vulkan 1.1 entry points");
        goto fail;
    }
    uint32_t api = d->api_version ? d->api_version : VK_API_VERSION_1_1;
    if (api < VK_API_VERSION_1_1) {
        r = vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "external context: api_version must be >= 1.1");
        goto fail;
    }
    probe_result pr;
    probe_device(&ctx->vki, ctx->phys, api, &pr);
    ctx->caps = pr.caps;
    uint32_t nq = 0;
    ctx->vki.GetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32)
        nq = 32;
    ctx->vki.GetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, qf);
    if (ctx->qfam >= nq || !(qf[ctx->qfam].queueFlags & VK_QUEUE_COMPUTE_BIT)) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                       "external context: queue family %u does not support compute", ctx->qfam);
        goto fail;
    }
    /* What the app actually enabled decides the paths. */
    bool pushd = false, ssc_ext = api >= VK_API_VERSION_1_3;
    for (uint32_t i = 0; i < d->enabled_extension_count; i++) {
        if (!d->enabled_extensions[i])
            continue;
        if (!strcmp(d->enabled_extensions[i], VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME))
            pushd = true;
        if (!strcmp(d->enabled_extensions[i], VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME))
            ssc_ext = true;
    }
    bool s16 = false, f16 = false, i8 = false, sc = false, hq = false;
    read_enabled_features(d->enabled_features, &s16, &f16, &i8, &sc, &hq);
    ctx->caps.push_descriptor = pushd;
    ctx->caps.storage16 = s16 && ctx->caps.storage16;
    ctx->caps.float16 = f16 && ctx->caps.float16;
    ctx->caps.int8 = i8 && ctx->caps.int8;
    ctx->caps.size_control = sc && ssc_ext && ctx->caps.size_control;
    ctx->caps.host_query_reset = hq && ctx->caps.host_query_reset;
    r = finish_context(ctx, d->pipeline_cache_data, d->pipeline_cache_size);
    if (r != VKLA_SUCCESS)
        goto fail;
    *out = ctx;
    return VKLA_SUCCESS;
fail:
    vkla_context_destroy(ctx);
    return r;
}

void vkla_context_destroy(vkla_context *ctx)
{
    if (!ctx)
        return;
    /* An external context never touches the app's queue here: the app guarantees that no
     * work recorded with this context is still pending (see vkla_context_destroy). */
    if (ctx->device && ctx->vk.vkDeviceWaitIdle && !ctx->external)
        ctx->vk.vkDeviceWaitIdle(ctx->device);
    if (ctx->device && ctx->vk.vkDestroyBuffer) {
        vkla_buffer_destroy(ctx, ctx->dummy);
        vkla_buffer_destroy(ctx, ctx->scratch);
        vkla_buffer_destroy(ctx, ctx->staging);
        vkla__destroy_pipelines(ctx);
        if (ctx->timestamps)
            ctx->vk.vkDestroyQueryPool(ctx->device, ctx->timestamps, NULL);
        if (ctx->cache)
            ctx->vk.vkDestroyPipelineCache(ctx->device, ctx->cache, NULL);
        if (ctx->fence)
            ctx->vk.vkDestroyFence(ctx->device, ctx->fence, NULL);
        if (ctx->pool)
            ctx->vk.vkDestroyCommandPool(ctx->device, ctx->pool, NULL);
    }
    if (!ctx->external) {
        if (ctx->device && ctx->vk.vkDestroyDevice)
            ctx->vk.vkDestroyDevice(ctx->device, NULL);
        else if (ctx->device && ctx->vki.GetDeviceProcAddr) {
            PFN_vkDestroyDevice dd = (PFN_vkDestroyDevice)ctx->vki.GetDeviceProcAddr(ctx->device, "vkDestroyDevice");
            if (dd)
                dd(ctx->device, NULL);
        }
        if (ctx->messenger && ctx->vki.DestroyDebugUtilsMessengerEXT)
            ctx->vki.DestroyDebugUtilsMessengerEXT(ctx->instance, ctx->messenger, NULL);
        if (ctx->instance && ctx->vki.DestroyInstance)
            ctx->vki.DestroyInstance(ctx->instance, NULL);
        if (ctx->loader)
            dlclose(ctx->loader);
    }
    free(ctx);
}

vkla_result vkla_context_device_info(vkla_context *ctx, vkla_device_info *out)
{
    if (!ctx || !out)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_context_device_info: NULL argument");
    fill_info(&ctx->caps, &ctx->var, out);
    uint32_t nq = 0;
    ctx->vki.GetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32)
        nq = 32;
    ctx->vki.GetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, qf);
    if (ctx->qfam < nq)
        out->timestamp_valid_bits = qf[ctx->qfam].timestampValidBits;
    return VKLA_SUCCESS;
}

vkla_result vkla_enumerate_devices(vkla_device_info *infos, uint32_t *count)
{
    if (!count)
        return VKLA_ERROR_NULL_POINTER;
    vkla_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return VKLA_ERROR_OUT_OF_MEMORY;
    VkPhysicalDevice *pds = NULL;
    uint32_t n = 0;
    vkla_result r = open_instance(ctx, false, false);
    if (r == VKLA_SUCCESS)
        r = list_physical(ctx, &pds, &n);
    if (r == VKLA_SUCCESS) {
        uint32_t m = infos ? (n < *count ? n : *count) : n;
        for (uint32_t i = 0; infos && i < m; i++) {
            probe_result pr;
            probe_device(&ctx->vki, pds[i], ctx->caps.api_version, &pr);
            fill_info(&pr.caps, NULL, &infos[i]);
            uint32_t nq = 0;
            ctx->vki.GetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, NULL);
            VkQueueFamilyProperties qf[32];
            if (nq > 32)
                nq = 32;
            ctx->vki.GetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, qf);
            for (uint32_t q = 0; q < nq; q++)
                if (qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) {
                    infos[i].timestamp_valid_bits = qf[q].timestampValidBits;
                    break;
                }
        }
        *count = m;
    }
    free(pds);
    vkla_context_destroy(ctx);
    return r;
}

vkla_result vkla_device_requirements_query(VkInstance instance, VkPhysicalDevice pd,
                                           PFN_vkGetInstanceProcAddr gipa,
                                           vkla_device_requirements *out)
{
    if (!instance || !pd || !gipa || !out)
        return VKLA_ERROR_NULL_POINTER;
    memset(out, 0, sizeof(*out));
    vkla_instance_fns f;
    memset(&f, 0, sizeof(f));
    vkla__load_instance_fns(&f, gipa, instance);
    if (!f.GetPhysicalDeviceProperties2)
        return VKLA_ERROR_UNSUPPORTED;
    VkPhysicalDeviceProperties props;
    f.GetPhysicalDeviceProperties(pd, &props);
    probe_result pr;
    probe_device(&f, pd, props.apiVersion, &pr);
    out->min_api_version = VK_API_VERSION_1_1;
    uint32_t api = pr.caps.api_version;
    if (pr.ext_push_descriptor)
        out->extensions[out->extension_count++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    if (api < VK_API_VERSION_1_3 && pr.ext_subgroup_size_control && pr.feat_size_control)
        out->extensions[out->extension_count++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
    if (api < VK_API_VERSION_1_2 && pr.ext_float16_int8)
        out->extensions[out->extension_count++] = VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME;
    if (api < VK_API_VERSION_1_2 && pr.ext_host_query_reset)
        out->extensions[out->extension_count++] = VK_EXT_HOST_QUERY_RESET_EXTENSION_NAME;
    out->storage_buffer_16bit_access = pr.caps.storage16;
    out->shader_float16 = pr.caps.float16;
    out->shader_int8 = pr.caps.int8;
    out->subgroup_size_control = pr.feat_size_control;
    out->compute_full_subgroups = pr.feat_full_subgroups;
    out->host_query_reset = pr.caps.host_query_reset;
    return VKLA_SUCCESS;
}

vkla_result vkla_pipeline_cache_get(vkla_context *ctx, void *data, size_t *size)
{
    if (!ctx || !size)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_pipeline_cache_get: NULL argument");
    VkResult vr = ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->cache, size, data);
    if (vr != VK_SUCCESS && vr != VK_INCOMPLETE)
        return vkla__vkfail(ctx, vr, "vkGetPipelineCacheData");
    return VKLA_SUCCESS;
}

VkDevice vkla_context_vk_device(const vkla_context *ctx) { return ctx ? ctx->device : VK_NULL_HANDLE; }
VkQueue vkla_context_vk_queue(const vkla_context *ctx) { return ctx ? ctx->queue : VK_NULL_HANDLE; }
uint32_t vkla_context_queue_family(const vkla_context *ctx) { return ctx ? ctx->qfam : 0; }

vkla_result vkla_context_set_scratch_limit(vkla_context *ctx, uint64_t bytes)
{
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (bytes && bytes < 4096)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "scratch limit: %llu bytes is below the minimum of 4096",
                          (unsigned long long)bytes);
    ctx->scratch_limit = bytes ? bytes : ctx->scratch_limit_default;
    return VKLA_SUCCESS;
}

uint64_t vkla_context_scratch_limit(const vkla_context *ctx)
{
    return ctx ? ctx->scratch_limit : 0;
}
