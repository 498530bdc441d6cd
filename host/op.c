/* Plumbing shared by the op families: the four public entry points (run, record, scratch size,
 * bench) over an op's own validate/record functions, scratch resolution, and the checks of
 * gate and state tensors. */
#include "internal.h"

#include <stdio.h>

bool vkla__tensor_contiguous(const vkla_tensor *t)
{
    uint64_t packed = 1;
    for (int i = (int)t->ndim - 1; i >= 0; i--) {
        if (t->strides[i] && t->strides[i] != packed && t->shape[i] != 1)
            return false;
        packed *= t->shape[i];
    }
    return true;
}

vkla_result vkla__check_f32_opt(vkla_context *ctx, const char *op, const char *name,
                                const vkla_tensor *t, uint32_t ndim, const uint64_t *shape,
                                uint32_t flag, uint32_t *flags)
{
    if (!t->buffer)
        return VKLA_SUCCESS;
    vkla_result r = vkla__check_tensor(ctx, op, name, t, ndim, shape, 1u << VKLA_DTYPE_F32);
    if (r != VKLA_SUCCESS)
        return r;
    if (!vkla__tensor_contiguous(t))
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "%s: %s must be contiguous", op, name);
    *flags |= flag;
    return VKLA_SUCCESS;
}

vkla_result vkla__resolve_scratch(vkla_context *ctx, const char *op, uint64_t need,
                                  vkla_buffer *buf, uint64_t offset, bool run_mode,
                                  uint64_t start_align, vkla_buffer **out, uint64_t *out_offset)
{
    *out = buf;
    *out_offset = offset;
    if (!need)
        return VKLA_SUCCESS;
    if (!buf) {
        if (!run_mode)
            return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER,
                              "%s: this call needs %llu bytes of scratch; pass args.scratch when "
                              "recording", op, (unsigned long long)need);
        vkla_result r = vkla__ensure_scratch(ctx, need);
        if (r != VKLA_SUCCESS)
            return r;
        *out = ctx->scratch;
        *out_offset = 0;
        return VKLA_SUCCESS;
    }
    uint64_t al = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    if (start_align && (buf->base + offset) % start_align)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "%s: scratch must start %llu-byte aligned (buffer offset + scratch_offset)",
                          op, (unsigned long long)start_align);
    if (al && offset % al)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "%s: scratch_offset %llu is not a multiple of %llu", op,
                          (unsigned long long)offset, (unsigned long long)al);
    if (offset > buf->size || buf->size - offset < need)
        return vkla__fail(ctx, VKLA_ERROR_SCRATCH_TOO_SMALL,
                          "%s: scratch has %llu bytes after the offset, %llu needed", op,
                          (unsigned long long)(offset <= buf->size ? buf->size - offset : 0),
                          (unsigned long long)need);
    return VKLA_SUCCESS;
}

vkla_result vkla__op_record(const vkla_op_impl *op, vkla_context *ctx, VkCommandBuffer cmd,
                            const void *args)
{
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (cmd == VK_NULL_HANDLE)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: command buffer is VK_NULL_HANDLE",
                          op->name);
    return op->record(ctx, cmd, args, false);
}

vkla_result vkla__op_run(const vkla_op_impl *op, vkla_context *ctx, const void *args)
{
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    uint64_t need;
    vkla_result r = op->scratch(ctx, args, &need); /* validate before touching the command buffer */
    if (r != VKLA_SUCCESS)
        return r;
    VkCommandBuffer cmd;
    if ((r = vkla__begin_run(ctx, &cmd)) != VKLA_SUCCESS)
        return r;
    r = op->record(ctx, cmd, args, true);
    if (r != VKLA_SUCCESS) {
        ctx->vk.vkEndCommandBuffer(cmd);
        return r;
    }
    return vkla__submit_wait(ctx);
}

vkla_result vkla__op_scratch_size(const vkla_op_impl *op, vkla_context *ctx, const void *args,
                                  uint64_t *bytes)
{
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (!bytes)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: bytes is NULL", op->name);
    return op->scratch(ctx, args, bytes);
}

typedef struct bench_call {
    const vkla_op_impl *op;
    const void *args;
} bench_call;

static vkla_result bench_record(vkla_context *ctx, VkCommandBuffer cmd, const void *p)
{
    const bench_call *c = (const bench_call *)p;
    return c->op->record(ctx, cmd, c->args, true);
}

vkla_result vkla__op_bench(const vkla_op_impl *op, vkla_context *ctx, const void *args,
                           const vkla_buffer *args_scratch, uint32_t warmup, uint32_t reps,
                           double *times_us)
{
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    uint64_t need = 0;
    vkla_result r = op->scratch(ctx, args, &need);
    if (r != VKLA_SUCCESS)
        return r;
    /* grow the context scratch once, so the recorded repetitions all use the same buffer */
    if (need && !args_scratch && (r = vkla__ensure_scratch(ctx, need)) != VKLA_SUCCESS)
        return r;
    bench_call c = {op, args};
    return vkla__bench(ctx, bench_record, &c, warmup, reps, times_us);
}

/* The bytes [lo, hi) of the VkBuffer that a view spans. */
static void view_span(const vkla_tensor *t, uint64_t *lo, uint64_t *hi)
{
    uint64_t st[VKLA_MAX_DIMS], last = 0;
    vkla__tensor_strides(t, st);
    for (uint32_t i = 0; i < t->ndim; i++)
        last += (t->shape[i] - 1) * st[i];
    *lo = t->buffer->base + t->offset;
    *hi = *lo + (last + 1) * vkla_dtype_size(t->dtype);
}

bool vkla__views_overlap(const vkla_tensor *a, const vkla_tensor *b)
{
    if (!a->buffer || !b->buffer || a->buffer->buffer != b->buffer->buffer)
        return false;
    uint64_t alo, ahi, blo, bhi;
    view_span(a, &alo, &ahi);
    view_span(b, &blo, &bhi);
    if (ahi <= blo || bhi <= alo)
        return false;
    /* Views of one fused [B,T,...] buffer interleave: same element size and token stride P (the
     * batch stride a multiple of it), each token's footprint within P. They are disjoint when
     * their footprints are, modulo P. */
    uint64_t es = vkla_dtype_size(a->dtype);
    if (a->ndim != 4 || b->ndim != 4 || es != vkla_dtype_size(b->dtype))
        return true;
    uint64_t sa[VKLA_MAX_DIMS], sb[VKLA_MAX_DIMS];
    vkla__tensor_strides(a, sa);
    vkla__tensor_strides(b, sb);
    uint64_t P = sa[1] * es;
    if (sa[1] != sb[1] || P == 0 || (a->shape[0] > 1 && sa[0] % sa[1]) ||
        (b->shape[0] > 1 && sb[0] % sb[1]))
        return true;
    uint64_t wa = ((a->shape[2] - 1) * sa[2] + a->shape[3]) * es;
    uint64_t wb = ((b->shape[2] - 1) * sb[2] + b->shape[3]) * es;
    if (wa > P || wb > P)
        return true;
    uint64_t d = (blo - alo % P + P) % P; /* b's start after a's, modulo P */
    return d < wa || (P - d) % P < wb;
}
