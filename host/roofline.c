/* The device's own roofline (vkla_device_roofline): peak FMA throughput in f32 (and f16 where
 * the context has shaderFloat16) and copy bandwidth, measured with GPU timestamps through the
 * same timing path as the ops (vkla__bench). Kernels: shaders/roofline/. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 8 vec4 chains x 4 steps per loop iteration (shaders/roofline/fma.comp) */
#define FMA_PER_THREAD_ITER 128.0
#define FLOPS_PER_THREAD_ITER (2.0 * FMA_PER_THREAD_ITER)

typedef struct fma_job {
    vkla_pipeline *pipe;
    vkla_buffer *out;
    uint32_t groups, iters;
} fma_job;

typedef struct copy_job {
    vkla_pipeline *pipe;
    vkla_buffer *src, *dst;
    uint64_t bytes;
    uint32_t groups;
} copy_job;

static void push_buffers(vkla_context *ctx, VkCommandBuffer cmd, vkla_pipeline *p,
                         vkla_buffer *const *bufs, const uint64_t *sizes, uint32_t n)
{
    VkDescriptorBufferInfo infos[2];
    VkWriteDescriptorSet w[2];
    for (uint32_t i = 0; i < n; i++) {
        infos[i] = (VkDescriptorBufferInfo){bufs[i]->buffer, bufs[i]->base, sizes[i]};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstBinding = i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &infos[i]};
    }
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    ctx->vk.vkCmdPushDescriptorSetKHR(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, n, w);
}

static vkla_result record_fma(vkla_context *ctx, VkCommandBuffer cmd, const void *args)
{
    const fma_job *j = args;
    uint64_t size = 16;
    push_buffers(ctx, cmd, j->pipe, &j->out, &size, 1);
    struct { uint32_t iters; float a, b, never; } pc = {j->iters, 0.999f, 0.001f, -12345.0f};
    ctx->vk.vkCmdPushConstants(cmd, j->pipe->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc,
                               &pc);
    ctx->vk.vkCmdDispatch(cmd, j->groups, 1, 1);
    return VKLA_SUCCESS;
}

static vkla_result record_copy(vkla_context *ctx, VkCommandBuffer cmd, const void *args)
{
    const copy_job *j = args;
    vkla_buffer *bufs[2] = {j->src, j->dst};
    uint64_t sizes[2] = {j->bytes, j->bytes};
    push_buffers(ctx, cmd, j->pipe, bufs, sizes, 2);
    uint32_t n = (uint32_t)(j->bytes / 16);
    ctx->vk.vkCmdPushConstants(cmd, j->pipe->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof n, &n);
    ctx->vk.vkCmdDispatch(cmd, j->groups, 1, 1);
    return VKLA_SUCCESS;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Best GPU time (us) of reps timed calls: a peak is what the device can do, and anything else
 * sharing it (other processes on a CPU device, clocks ramping up) only ever slows a call. */
static vkla_result timed(vkla_context *ctx, vkla_record_fn rec, const void *job, uint32_t warmup,
                         uint32_t reps, double *best_us)
{
    double t[16];
    if (reps > 16)
        reps = 16;
    vkla_result r = vkla__bench(ctx, rec, job, warmup, reps, t);
    if (r != VKLA_SUCCESS)
        return r;
    qsort(t, reps, sizeof(double), cmp_double);
    *best_us = t[0];
    return VKLA_SUCCESS;
}

static uint32_t local_size(vkla_context *ctx)
{
    uint32_t l = 256;
    if (ctx->caps.props.limits.maxComputeWorkGroupInvocations < l)
        l = ctx->caps.props.limits.maxComputeWorkGroupInvocations;
    if (ctx->caps.props.limits.maxComputeWorkGroupSize[0] < l)
        l = ctx->caps.props.limits.maxComputeWorkGroupSize[0];
    return l ? l : 1;
}

static bool is_cpu(vkla_context *ctx)
{
    return ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
}

/* Grows the launch until one dispatch takes about target_us (first the number of workgroups, to
 * fill every compute unit, then the loop count), then takes the median of the timed calls. */
static vkla_result probe_fma(vkla_context *ctx, bool fp16, vkla_buffer *out, double *gflops,
                             uint32_t *groups_out, uint32_t *local_out, double *time_out)
{
    uint32_t local = local_size(ctx);
    uint32_t spec[1] = {local};
    fma_job j = {.out = out};
    vkla_result r = vkla__get_pipeline(ctx, fp16 ? "roofline/fma.f16" : "roofline/fma.f32", spec,
                                       1, 1, 0, &j.pipe);
    if (r != VKLA_SUCCESS)
        return r;
    const bool cpu = is_cpu(ctx);
    const double target_us = cpu ? 40000.0 : 4000.0;
    uint32_t max_groups = ctx->caps.props.limits.maxComputeWorkGroupCount[0];
    uint32_t group_cap = cpu ? 256 : 65535;
    if (group_cap > max_groups)
        group_cap = max_groups;
    j.groups = cpu ? 16 : 256;
    if (j.groups > group_cap)
        j.groups = group_cap;
    j.iters = cpu ? 16 : 64;
    double t = 0;
    for (int step = 0; step < 24; step++) {
        if ((r = timed(ctx, record_fma, &j, 1, 3, &t)) != VKLA_SUCCESS)
            return r;
        if (t >= 0.5 * target_us)
            break;
        double scale = t > 1.0 ? target_us / t : 64.0;
        if (scale > 16.0)
            scale = 16.0;
        if (scale < 2.0)
            scale = 2.0;
        if (j.groups < group_cap) {
            uint64_t g = (uint64_t)((double)j.groups * scale);
            j.groups = g > group_cap ? group_cap : (uint32_t)g;
        } else if (j.iters < (1u << 24)) {
            j.iters = (uint32_t)((double)j.iters * scale);
        } else {
            break;
        }
    }
    if ((r = timed(ctx, record_fma, &j, 1, 7, &t)) != VKLA_SUCCESS)
        return r;
    double flops = (double)j.groups * local * (double)j.iters * FLOPS_PER_THREAD_ITER;
    *gflops = t > 0 ? flops / (t * 1e3) : 0;
    if (groups_out)
        *groups_out = j.groups;
    if (local_out)
        *local_out = local;
    if (time_out)
        *time_out = t;
    return VKLA_SUCCESS;
}

static vkla_result probe_copy(vkla_context *ctx, double *gbs, uint64_t *bytes_out, double *time_out)
{
    uint32_t local = local_size(ctx);
    uint32_t spec[1] = {local};
    copy_job j;
    memset(&j, 0, sizeof j);
    vkla_result r = vkla__get_pipeline(ctx, "roofline/copy", spec, 1, 2, 0, &j.pipe);
    if (r != VKLA_SUCCESS)
        return r;
    /* Large enough to leave every cache (two buffers of 256 MiB on GPUs, 64 MiB on CPU
     * devices), within maxStorageBufferRange and an eighth of the device-local memory. */
    uint64_t bytes = is_cpu(ctx) ? (64ull << 20) : (256ull << 20);
    uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    if (bytes > range)
        bytes = range;
    uint64_t local_mem = 0;
    for (uint32_t i = 0; i < ctx->caps.mem.memoryHeapCount; i++)
        if (ctx->caps.mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
            local_mem += ctx->caps.mem.memoryHeaps[i].size;
    if (local_mem && bytes > local_mem / 8)
        bytes = local_mem / 8;
    if (bytes > (uint64_t)UINT32_MAX / 2)
        bytes = (uint64_t)UINT32_MAX / 2;
    bytes = bytes / 4096 * 4096;
    if (bytes < 4096)
        bytes = 4096;
    for (;;) {
        r = vkla__buffer_alloc(ctx, bytes, false, &j.src);
        if (r == VKLA_SUCCESS) {
            r = vkla__buffer_alloc(ctx, bytes, false, &j.dst);
            if (r != VKLA_SUCCESS) {
                vkla_buffer_destroy(ctx, j.src);
                j.src = NULL;
            }
        }
        if (r != VKLA_ERROR_OUT_OF_MEMORY || bytes <= (16ull << 20))
            break;
        bytes /= 2;
    }
    if (r != VKLA_SUCCESS)
        return r;
    j.bytes = bytes;
    /* enough threads for every element once, up to the grid limit (the kernel loops) */
    uint64_t threads = bytes / 16;
    uint64_t groups = (threads + local - 1) / local;
    uint32_t max_groups = ctx->caps.props.limits.maxComputeWorkGroupCount[0];
    if (is_cpu(ctx) && groups > 1024)
        groups = 1024;
    if (groups > max_groups)
        groups = max_groups;
    if (groups > 65535)
        groups = 65535;
    j.groups = (uint32_t)groups;
    /* the source gets defined contents; the warm-up pass touches every page of both */
    r = vkla_buffer_fill(ctx, j.src, 0, bytes, 0x3f800000u);
    double t = 0;
    if (r == VKLA_SUCCESS)
        r = timed(ctx, record_copy, &j, 2, 7, &t);
    vkla_buffer_destroy(ctx, j.src);
    vkla_buffer_destroy(ctx, j.dst);
    if (r != VKLA_SUCCESS)
        return r;
    *gbs = t > 0 ? 2.0 * (double)bytes / (t * 1e3) : 0;
    *bytes_out = bytes;
    *time_out = t;
    return VKLA_SUCCESS;
}

vkla_result vkla_device_roofline(vkla_context *ctx, vkla_roofline *out)
{
    if (!ctx || !out)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_device_roofline: NULL argument");
    memset(out, 0, sizeof(*out));
    vkla_buffer *sink = NULL;
    vkla_result r = vkla__buffer_alloc(ctx, 16, false, &sink);
    if (r != VKLA_SUCCESS)
        return r;
    r = probe_fma(ctx, false, sink, &out->fma_f32_gflops, &out->fma_workgroups,
                  &out->fma_local_size, &out->fma_time_us);
    if (r == VKLA_SUCCESS && ctx->caps.float16)
        r = probe_fma(ctx, true, sink, &out->fma_f16_gflops, NULL, NULL, NULL);
    vkla_buffer_destroy(ctx, sink);
    if (r == VKLA_SUCCESS)
        r = probe_copy(ctx, &out->copy_gbs, &out->copy_bytes, &out->copy_time_us);
    if (r != VKLA_SUCCESS) {
        char msg[sizeof ctx->err];
        snprintf(msg, sizeof msg, "%s", ctx->err);
        vkla__fail(ctx, r, "vkla_device_roofline: %s", msg);
    }
    return r;
}
