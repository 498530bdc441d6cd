/* Buffers: context-owned device buffers, wrapped application buffers, uploads and downloads. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

uint64_t vkla__align_up(uint64_t x, uint64_t a) { return a ? (x + a - 1) / a * a : x; }

static int find_memory_type(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits,
                            VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid)
{
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if ((bits & (1u << i)) && (f & want) == want && !(f & avoid))
            return (int)i;
    }
    return -1;
}

vkla_result vkla__buffer_alloc(vkla_context *ctx, uint64_t size, bool host_visible,
                               vkla_buffer **out)
{
    *out = NULL;
    if (size == 0)
        size = 4;
    vkla_buffer *b = calloc(1, sizeof(*b));
    if (!b)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = vkla__align_up(size, 4),
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                              .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult vr = ctx->vk.vkCreateBuffer(ctx->device, &bci, NULL, &b->buffer);
    if (vr != VK_SUCCESS) {
        free(b);
        return vkla__vkfail(ctx, vr, "vkCreateBuffer");
    }
    VkMemoryRequirements req;
    ctx->vk.vkGetBufferMemoryRequirements(ctx->device, b->buffer, &req);
    const VkPhysicalDeviceMemoryProperties *mp = &ctx->caps.mem;
    int type = -1;
    if (host_visible) {
        type = find_memory_type(mp, req.memoryTypeBits,
                                VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                    VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                                    VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
        if (type < 0)
            type = find_memory_type(mp, req.memoryTypeBits,
                                    VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                        VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0);
    } else {
        /* device local; mappable device memory (UMA, lavapipe) lets uploads skip staging */
        type = find_memory_type(mp, req.memoryTypeBits,
                                VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                    VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                    VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                0);
        /* On discrete GPUs the small BAR window is host-visible too; prefer plain VRAM for
         * large buffers there. */
        if (type >= 0 && ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU)
            type = -1;
        if (type < 0)
            type = find_memory_type(mp, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    }
    if (type < 0)
        type = find_memory_type(mp, req.memoryTypeBits, 0, 0);
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .allocationSize = req.size,
                                .memoryTypeIndex = (uint32_t)type};
    vr = type < 0 ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                  : ctx->vk.vkAllocateMemory(ctx->device, &mai, NULL, &b->memory);
    if (vr != VK_SUCCESS) {
        ctx->vk.vkDestroyBuffer(ctx->device, b->buffer, NULL);
        free(b);
        return vkla__fail(ctx, vr == VK_ERROR_OUT_OF_HOST_MEMORY || vr == VK_ERROR_OUT_OF_DEVICE_MEMORY
                                   ? VKLA_ERROR_OUT_OF_MEMORY : VKLA_ERROR_VULKAN,
                          "could not allocate %llu bytes of device memory (VkResult %d)",
                          (unsigned long long)size, (int)vr);
    }
    ctx->vk.vkBindBufferMemory(ctx->device, b->buffer, b->memory, 0);
    VkMemoryPropertyFlags f = mp->memoryTypes[type].propertyFlags;
    if (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
        if (ctx->vk.vkMapMemory(ctx->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped) != VK_SUCCESS)
            b->mapped = NULL;
        b->coherent = (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    }
    b->size = size;
    b->owned = true;
    *out = b;
    return VKLA_SUCCESS;
}

vkla_result vkla_buffer_create(vkla_context *ctx, uint64_t size, vkla_buffer **out)
{
    if (!ctx || !out)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_buffer_create: NULL argument");
    if (size == 0)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "vkla_buffer_create: size is 0");
    return vkla__buffer_alloc(ctx, size, false, out);
}

vkla_result vkla_buffer_wrap(vkla_context *ctx, VkBuffer buffer, uint64_t offset, uint64_t size,
                             vkla_buffer **out)
{
    if (!ctx || !out || buffer == VK_NULL_HANDLE)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_buffer_wrap: NULL argument");
    *out = NULL;
    if (size == 0)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "vkla_buffer_wrap: size is 0");
    uint64_t align = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    if (align && offset % align)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "vkla_buffer_wrap: offset %llu is not a multiple of "
                          "minStorageBufferOffsetAlignment (%llu)",
                          (unsigned long long)offset, (unsigned long long)align);
    vkla_buffer *b = calloc(1, sizeof(*b));
    if (!b)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    b->buffer = buffer;
    b->base = offset;
    b->size = size;
    b->owned = false;
    *out = b;
    return VKLA_SUCCESS;
}

void vkla_buffer_destroy(vkla_context *ctx, vkla_buffer *b)
{
    if (!ctx || !b)
        return;
    if (b->owned) {
        if (b->mapped)
            ctx->vk.vkUnmapMemory(ctx->device, b->memory);
        ctx->vk.vkDestroyBuffer(ctx->device, b->buffer, NULL);
        ctx->vk.vkFreeMemory(ctx->device, b->memory, NULL);
    }
    free(b);
}

uint64_t vkla_buffer_size(const vkla_buffer *b) { return b ? b->size : 0; }
VkBuffer vkla_buffer_vk(const vkla_buffer *b) { return b ? b->buffer : VK_NULL_HANDLE; }

static vkla_result check_range(vkla_context *ctx, const char *fn, vkla_buffer *b,
                               uint64_t offset, uint64_t size)
{
    if (!ctx || !b)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: NULL argument", fn);
    if (offset > b->size || size > b->size - offset)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_RANGE,
                          "%s: range [%llu, %llu) is outside the buffer of %llu bytes", fn,
                          (unsigned long long)offset, (unsigned long long)(offset + size),
                          (unsigned long long)b->size);
    return VKLA_SUCCESS;
}

static vkla_result ensure_staging(vkla_context *ctx, uint64_t size)
{
    if (ctx->staging && ctx->staging->size >= size)
        return VKLA_SUCCESS;
    vkla_buffer_destroy(ctx, ctx->staging);
    ctx->staging = NULL;
    return vkla__buffer_alloc(ctx, size, true, &ctx->staging);
}

/* Copies through the staging buffer in pieces of at most 64 MiB. */
static vkla_result staged_copy(vkla_context *ctx, vkla_buffer *b, uint64_t offset, void *host,
                               uint64_t size, bool upload)
{
    const uint64_t piece = 64ull << 20;
    vkla_result r = ensure_staging(ctx, size < piece ? size : piece);
    if (r != VKLA_SUCCESS)
        return r;
    for (uint64_t done = 0; done < size;) {
        uint64_t n = size - done < piece ? size - done : piece;
        if (upload)
            memcpy(ctx->staging->mapped, (const char *)host + done, n);
        VkCommandBuffer cmd;
        if ((r = vkla__begin_run(ctx, &cmd)) != VKLA_SUCCESS)
            return r;
        VkBufferCopy region = {.srcOffset = upload ? 0 : b->base + offset + done,
                               .dstOffset = upload ? b->base + offset + done : 0,
                               .size = n};
        if (upload) {
            ctx->vk.vkCmdCopyBuffer(cmd, ctx->staging->buffer, b->buffer, 1, &region);
        } else {
            ctx->vk.vkCmdCopyBuffer(cmd, b->buffer, ctx->staging->buffer, 1, &region);
            vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                          VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        }
        if ((r = vkla__submit_wait(ctx)) != VKLA_SUCCESS)
            return r;
        if (!upload)
            memcpy((char *)host + done, ctx->staging->mapped, n);
        done += n;
    }
    return VKLA_SUCCESS;
}

/* Host access to mapped memory is only safe once earlier device work is done. */
static vkla_result idle(vkla_context *ctx)
{
    VkResult vr = ctx->vk.vkQueueWaitIdle(ctx->queue);
    return vr == VK_SUCCESS ? VKLA_SUCCESS : vkla__vkfail(ctx, vr, "vkQueueWaitIdle");
}

vkla_result vkla_buffer_upload(vkla_context *ctx, vkla_buffer *b, uint64_t offset,
                               const void *data, uint64_t size)
{
    vkla_result r = check_range(ctx, "vkla_buffer_upload", b, offset, size);
    if (r != VKLA_SUCCESS)
        return r;
    if (!data && size)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_buffer_upload: data is NULL");
    if (size == 0)
        return VKLA_SUCCESS;
    if (b->mapped && b->coherent) {
        if ((r = idle(ctx)) != VKLA_SUCCESS)
            return r;
        memcpy((char *)b->mapped + offset, data, size);
        return VKLA_SUCCESS;
    }
    return staged_copy(ctx, b, offset, (void *)data, size, true);
}

vkla_result vkla_buffer_download(vkla_context *ctx, vkla_buffer *b, uint64_t offset, void *data,
                                 uint64_t size)
{
    vkla_result r = check_range(ctx, "vkla_buffer_download", b, offset, size);
    if (r != VKLA_SUCCESS)
        return r;
    if (!data && size)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "vkla_buffer_download: data is NULL");
    if (size == 0)
        return VKLA_SUCCESS;
    if (b->mapped && b->coherent) {
        if ((r = idle(ctx)) != VKLA_SUCCESS)
            return r;
        memcpy(data, (const char *)b->mapped + offset, size);
        return VKLA_SUCCESS;
    }
    return staged_copy(ctx, b, offset, data, size, false);
}

vkla_result vkla_buffer_fill(vkla_context *ctx, vkla_buffer *b, uint64_t offset, uint64_t size,
                             uint32_t word)
{
    vkla_result r = check_range(ctx, "vkla_buffer_fill", b, offset, size);
    if (r != VKLA_SUCCESS)
        return r;
    if (offset % 4 || size % 4)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "vkla_buffer_fill: offset and size must be multiples of 4");
    if (size == 0)
        return VKLA_SUCCESS;
    VkCommandBuffer cmd;
    if ((r = vkla__begin_run(ctx, &cmd)) != VKLA_SUCCESS)
        return r;
    ctx->vk.vkCmdFillBuffer(cmd, b->buffer, b->base + offset, size, word);
    return vkla__submit_wait(ctx);
}

vkla_result vkla__ensure_scratch(vkla_context *ctx, uint64_t size)
{
    if (ctx->scratch && ctx->scratch->size >= size)
        return VKLA_SUCCESS;
    vkla_buffer_destroy(ctx, ctx->scratch);
    ctx->scratch = NULL;
    /* grow geometrically so repeated calls with growing T do not reallocate every time */
    uint64_t want = size + size / 4;
    return vkla__buffer_alloc(ctx, want, false, &ctx->scratch);
}
