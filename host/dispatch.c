/* Command recording: run-mode submission, barriers, table uploads, split dispatches that keep
 * every binding inside maxStorageBufferRange, and GPU timestamps. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Run mode                                                                                    */
/* ------------------------------------------------------------------------------------------ */

vkla_result vkla__begin_run(vkla_context *ctx, VkCommandBuffer *cmd)
{
    VkResult vr = ctx->vk.vkResetCommandBuffer(ctx->cmd, 0);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    vr = ctx->vk.vkBeginCommandBuffer(ctx->cmd, &bi);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkBeginCommandBuffer");
    /* run-mode submissions follow earlier ones (uploads, previous ops) */
    vkla__barrier(ctx, ctx->cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
                  VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                  VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
    *cmd = ctx->cmd;
    return VKLA_SUCCESS;
}

vkla_result vkla__submit_wait(vkla_context *ctx)
{
    /* device writes become visible to host reads of mapped memory */
    vkla__barrier(ctx, ctx->cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
                  VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    VkResult vr = ctx->vk.vkEndCommandBuffer(ctx->cmd);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkEndCommandBuffer");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &ctx->cmd};
    vr = ctx->vk.vkResetFences(ctx->device, 1, &ctx->fence);
    if (vr == VK_SUCCESS)
        vr = ctx->vk.vkQueueSubmit(ctx->queue, 1, &si, ctx->fence);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkQueueSubmit");
    vr = ctx->vk.vkWaitForFences(ctx->device, 1, &ctx->fence, VK_TRUE, UINT64_MAX);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkWaitForFences");
    return VKLA_SUCCESS;
}

void vkla__barrier(vkla_context *ctx, VkCommandBuffer cmd, VkPipelineStageFlags src,
                   VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = src_access, .dstAccessMask = dst_access};
    ctx->vk.vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

void vkla__compute_barrier(vkla_context *ctx, VkCommandBuffer cmd)
{
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                  VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

vkla_result vkla__update_buffer(vkla_context *ctx, VkCommandBuffer cmd, vkla_buffer *buf,
                                uint64_t offset, const void *data, uint64_t size)
{
    /* vkCmdUpdateBuffer takes at most 65536 bytes, in multiples of 4 */
    for (uint64_t done = 0; done < size;) {
        uint64_t n = size - done;
        if (n > 65536)
            n = 65536;
        ctx->vk.vkCmdUpdateBuffer(cmd, buf->buffer, buf->base + offset + done, n,
                                  (const char *)data + done);
        done += n;
    }
    return VKLA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Sequences                                                                                   */
/* ------------------------------------------------------------------------------------------ */

vkla_result vkla__seqs_init(vkla_context *ctx, vkla_seqs *s, uint32_t B, uint32_t T,
                            const int32_t *cu, uint32_t num_seqs, uint32_t chunk)
{
    memset(s, 0, sizeof(*s));
    s->B = B;
    s->T = T;
    s->cu = cu;
    s->chunk = chunk;
    if (cu) {
        if (B != 1)
            return vkla__fail(ctx, VKLA_ERROR_BAD_SEQLENS,
                              "cu_seqlens given but the batch dimension is %u (must be 1)", B);
        if (num_seqs == 0)
            return vkla__fail(ctx, VKLA_ERROR_BAD_SEQLENS, "cu_seqlens given with num_seqs = 0");
        if (cu[0] != 0)
            return vkla__fail(ctx, VKLA_ERROR_BAD_SEQLENS, "cu_seqlens[0] is %d, must be 0", cu[0]);
        for (uint32_t i = 0; i < num_seqs; i++)
            if (cu[i + 1] < cu[i])
                return vkla__fail(ctx, VKLA_ERROR_BAD_SEQLENS,
                                  "cu_seqlens decreases at %u (%d then %d)", i + 1, cu[i], cu[i + 1]);
        if ((uint32_t)cu[num_seqs] != T)
            return vkla__fail(ctx, VKLA_ERROR_BAD_SEQLENS,
                              "cu_seqlens[%u] is %d but the tensors have T = %u", num_seqs,
                              cu[num_seqs], T);
        s->n = num_seqs;
    } else {
        if (num_seqs != 0 && num_seqs != B)
            return vkla__fail(ctx, VKLA_ERROR_BAD_SEQLENS,
                              "num_seqs is %u without cu_seqlens (must be 0 or B = %u)", num_seqs, B);
        s->n = B;
    }
    if (chunk) {
        s->chunk_off = malloc((s->n + 1) * sizeof(uint32_t));
        if (!s->chunk_off)
            return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
        uint64_t c = 0;
        for (uint32_t i = 0; i < s->n; i++) {
            s->chunk_off[i] = (uint32_t)c;
            c += (vkla__seq_len(s, i) + chunk - 1) / chunk;
            if (c > UINT32_MAX / 2)
                return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "too many chunks");
        }
        s->chunk_off[s->n] = (uint32_t)c;
        s->nchunks = c;
    }
    return VKLA_SUCCESS;
}

void vkla__seqs_free(vkla_seqs *s)
{
    free(s->chunk_off);
    s->chunk_off = NULL;
}

uint32_t vkla__seq_len(const vkla_seqs *s, uint32_t i)
{
    return s->cu ? (uint32_t)(s->cu[i + 1] - s->cu[i]) : s->T;
}

/* ------------------------------------------------------------------------------------------ */
/* Tensors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

const char *vkla_dtype_name(vkla_dtype d)
{
    switch (d) {
    case VKLA_DTYPE_F32: return "f32";
    case VKLA_DTYPE_F16: return "f16";
    case VKLA_DTYPE_BF16: return "bf16";
    case VKLA_DTYPE_I32: return "i32";
    }
    return "?";
}

size_t vkla_dtype_size(vkla_dtype d)
{
    switch (d) {
    case VKLA_DTYPE_F32: return 4;
    case VKLA_DTYPE_F16: return 2;
    case VKLA_DTYPE_BF16: return 2;
    case VKLA_DTYPE_I32: return 4;
    }
    return 0;
}

const char *vkla_form_name(vkla_form f)
{
    switch (f) {
    case VKLA_FORM_DEFAULT: return "default";
    case VKLA_FORM_CHUNK: return "chunk";
    case VKLA_FORM_RECURRENT: return "recurrent";
    case VKLA_FORM_ATTN: return "attn";
    case VKLA_FORM_RNN: return "rnn";
    }
    return "?";
}

vkla_tensor vkla_tensor_make(vkla_buffer *buf, uint64_t offset, vkla_dtype dtype, uint32_t ndim,
                             const uint64_t *shape)
{
    vkla_tensor t;
    memset(&t, 0, sizeof(t));
    t.buffer = buf;
    t.offset = offset;
    t.dtype = dtype;
    t.ndim = ndim > VKLA_MAX_DIMS ? VKLA_MAX_DIMS : ndim;
    for (uint32_t i = 0; i < t.ndim && shape; i++)
        t.shape[i] = shape[i];
    return t;
}

void vkla__tensor_strides(const vkla_tensor *t, uint64_t *st)
{
    uint64_t packed = 1;
    for (int i = (int)t->ndim - 1; i >= 0; i--) {
        st[i] = t->strides[i] ? t->strides[i] : packed;
        packed = st[i] * t->shape[i];
    }
}

bool vkla__vec4_view(const vkla_context *ctx, const vkla_tensor *t)
{
    uint64_t es = vkla_dtype_size(t->dtype), st[VKLA_MAX_DIMS];
    uint64_t al = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    vkla__tensor_strides(t, st);
    for (uint32_t d = 0; d + 1 < t->ndim; d++)
        if (st[d] % 4)
            return false;
    return t->shape[t->ndim - 1] % 4 == 0 && st[t->ndim - 1] == 1 &&
           (t->buffer->base + t->offset) % (4 * es) == 0 &&
           al % (4 * es) == 0;
}

vkla_result vkla__check_tensor(vkla_context *ctx, const char *op, const char *name,
                               const vkla_tensor *t, uint32_t ndim, const uint64_t *want,
                               uint32_t dtype_mask)
{
    if (!t->buffer)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER, "%s: tensor %s is missing (buffer NULL)", op, name);
    if (!(dtype_mask & (1u << t->dtype)) || (unsigned)t->dtype > VKLA_DTYPE_I32)
        return vkla__fail(ctx, VKLA_ERROR_DTYPE_MISMATCH, "%s: %s has dtype %s, not allowed here", op,
                          name, vkla_dtype_name(t->dtype));
    if (t->ndim != ndim)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: %s has %u dims, expected %u", op, name,
                          t->ndim, ndim);
    char shape[128] = "", exp[128] = "";
    size_t a = 0, b = 0;
    bool bad = false;
    for (uint32_t i = 0; i < ndim; i++) {
        a += (size_t)snprintf(shape + a, sizeof(shape) - a, "%s%llu", i ? "," : "", (unsigned long long)t->shape[i]);
        b += (size_t)snprintf(exp + b, sizeof(exp) - b, "%s%llu", i ? "," : "", (unsigned long long)want[i]);
        if (want[i] && t->shape[i] != want[i])
            bad = true;
        if (t->shape[i] == 0)
            return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: %s has a zero dimension [%s]", op,
                              name, shape);
    }
    if (bad)
        return vkla__fail(ctx, VKLA_ERROR_SHAPE_MISMATCH, "%s: %s has shape [%s], expected [%s]", op,
                          name, shape, exp);
    if (t->strides[ndim - 1] > 1)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "%s: %s's last dimension must be contiguous",
                          op, name);
    size_t es = vkla_dtype_size(t->dtype);
    if (t->offset % es)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                          "%s: %s's offset %llu is not a multiple of its element size", op, name,
                          (unsigned long long)t->offset);
    uint64_t st[VKLA_MAX_DIMS];
    vkla__tensor_strides(t, st);
    /* last element touched, with overflow checks */
    uint64_t last = 0;
    for (uint32_t i = 0; i < ndim; i++) {
        uint64_t d = t->shape[i] - 1;
        if (d && st[i] > (UINT64_MAX / 4) / d)
            return vkla__fail(ctx, VKLA_ERROR_OUT_OF_RANGE, "%s: %s's strides overflow", op, name);
        last += d * st[i];
    }
    uint64_t end = t->offset + (last + 1) * es;
    if (end > t->buffer->size || end < t->offset)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_RANGE,
                          "%s: %s reaches byte %llu but its buffer has %llu bytes", op, name,
                          (unsigned long long)end, (unsigned long long)t->buffer->size);
    return VKLA_SUCCESS;
}

vkla_bind vkla__bind_tensor(const vkla_tensor *t, vkla_row_mode mode)
{
    vkla_bind b;
    memset(&b, 0, sizeof(b));
    if (!t || !t->buffer)
        return b;
    uint64_t st[VKLA_MAX_DIMS];
    vkla__tensor_strides(t, st);
    b.buf = t->buffer;
    b.offset = t->offset;
    b.esize = (uint32_t)vkla_dtype_size(t->dtype);
    b.mode = mode;
    b.inner = t->shape[t->ndim - 1];
    switch (mode) {
    case VKLA_ROWS_TOKENS:            /* [B,T,H,X] or [B,T,H] (then X = 1) */
        if (t->ndim == 4) {
            b.sb = st[0]; b.st = st[1]; b.sh = st[2];
        } else {
            b.sb = st[0]; b.st = st[1]; b.sh = 1; b.inner = 1;
        }
        break;
    case VKLA_ROWS_SEQS:              /* [N,H,K,V] or [N,H,K] */
        b.sb = st[0]; b.sh = st[1];
        b.inner = t->ndim == 4 ? t->shape[2] * t->shape[3] : t->shape[2];
        break;
    case VKLA_ROWS_NONE:              /* [H] or [H,X] */
        b.sh = st[0];
        b.inner = t->ndim == 1 ? 1 : t->shape[1];
        break;
    default:
        break;
    }
    return b;
}

vkla_bind vkla__bind_region(vkla_buffer *buf, uint64_t offset, uint32_t esize, vkla_row_mode mode,
                            uint64_t sb, uint64_t sh, uint64_t inner, uint64_t whole_bytes)
{
    vkla_bind b;
    memset(&b, 0, sizeof(b));
    b.buf = buf;
    b.offset = offset;
    b.esize = esize;
    b.mode = mode;
    b.sb = sb;
    b.sh = sh;
    b.inner = inner;
    b.whole_bytes = whole_bytes;
    return b;
}

/* ------------------------------------------------------------------------------------------ */
/* Windows and splits                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* The byte range [lo, hi) a binding touches for a split. */
static void window(const vkla_seqs *s, const vkla_split *sp, const vkla_bind *b, uint64_t *lo,
                   uint64_t *hi)
{
    uint64_t r0 = 0, r1 = 0, t0 = 0, t1 = 0; /* inclusive row and token ranges */
    switch (b->mode) {
    case VKLA_ROWS_TOKENS:
        if (s->cu) {
            r0 = r1 = 0;
            t0 = (uint64_t)s->cu[sp->s0];
            t1 = (uint64_t)s->cu[sp->s1];
            t1 = t1 > t0 ? t1 - 1 : t0;
        } else {
            r0 = sp->s0;
            r1 = sp->s1 - 1;
            t0 = 0;
            t1 = s->T - 1;
        }
        break;
    case VKLA_ROWS_SEQS:
        r0 = sp->s0;
        r1 = sp->s1 - 1;
        break;
    case VKLA_ROWS_CHUNKS:
        r0 = s->chunk_off[sp->s0];
        r1 = s->chunk_off[sp->s1];
        r1 = r1 > r0 ? r1 - 1 : r0;
        break;
    case VKLA_ROWS_NONE:
        break;
    case VKLA_ROWS_WHOLE:
        *lo = b->offset;
        *hi = b->offset + b->whole_bytes;
        return;
    }
    uint64_t hd = b->head_div > 1 ? b->head_div : 1;
    uint64_t first = r0 * b->sb + t0 * b->st + (sp->h0 / hd) * b->sh;
    uint64_t last = r1 * b->sb + t1 * b->st + ((sp->h1 - 1) / hd) * b->sh + b->inner - 1;
    *lo = b->offset + first * b->esize;
    *hi = b->offset + (last + 1) * b->esize;
}

static bool split_fits(vkla_context *ctx, const vkla_seqs *s, const vkla_split *sp,
                       const vkla_bind *binds, uint32_t nbind)
{
    uint64_t range = ctx->caps.props.limits.maxStorageBufferRange;
    uint64_t align = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    for (uint32_t i = 0; i < nbind; i++) {
        if (!binds[i].buf)
            continue;
        uint64_t lo, hi;
        window(s, sp, &binds[i], &lo, &hi);
        uint64_t start = (binds[i].buf->base + lo) / align * align;
        if (binds[i].buf->base + hi - start > range)
            return false;
    }
    return true;
}

vkla_result vkla__plan_splits(vkla_context *ctx, const vkla_seqs *s, uint32_t H,
                              const vkla_bind *binds, uint32_t nbind, vkla_split **out,
                              uint32_t *count)
{
    /* Work list of pieces; a piece that does not fit is halved over heads, then sequences. */
    uint32_t cap = 16, n = 0, todo_n = 1, todo_cap = 16;
    vkla_split *res = malloc(cap * sizeof(*res));
    vkla_split *todo = malloc(todo_cap * sizeof(*todo));
    if (!res || !todo) {
        free(res);
        free(todo);
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    todo[0] = (vkla_split){0, s->n, 0, H};
    while (todo_n) {
        vkla_split sp = todo[--todo_n];
        if (split_fits(ctx, s, &sp, binds, nbind)) {
            if (n == cap) {
                cap *= 2;
                vkla_split *nr = realloc(res, cap * sizeof(*res));
                if (!nr)
                    goto oom;
                res = nr;
            }
            res[n++] = sp;
            continue;
        }
        vkla_split a = sp, b = sp;
        if (sp.h1 - sp.h0 > 1) {
            a.h1 = b.h0 = sp.h0 + (sp.h1 - sp.h0) / 2;
        } else if (sp.s1 - sp.s0 > 1) {
            a.s1 = b.s0 = sp.s0 + (sp.s1 - sp.s0) / 2;
        } else {
            free(res);
            free(todo);
            return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED,
                              "one sequence of one head spans more than the device's "
                              "maxStorageBufferRange (%llu bytes), and this op does not run "
                              "in pieces of T (lion: both directions cross every piece)",
                              (unsigned long long)ctx->caps.props.limits.maxStorageBufferRange);
        }
        if (todo_n + 2 > todo_cap) {
            todo_cap *= 2;
            vkla_split *nt = realloc(todo, todo_cap * sizeof(*todo));
            if (!nt)
                goto oom;
            todo = nt;
        }
        /* push b first so a (the lower half) is processed first: keeps pieces in order */
        todo[todo_n++] = b;
        todo[todo_n++] = a;
    }
    free(todo);
    *out = res;
    *count = n;
    return VKLA_SUCCESS;
oom:
    free(res);
    free(todo);
    return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
}

/* ------------------------------------------------------------------------------------------ */
/* Per-launch profile (vkla_context_profile)                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct vkla_prof_launch {
    const char *name;      /* the pipeline's name (the pipeline lives as long as the context) */
    uint32_t groups[3];
    uint32_t dispatches;
    double flops, bytes;
} vkla_prof_launch;

/* The recorder of one profiled bench call: the launches of one op call are listed while the
 * first warm-up copy is recorded (counting), then each timed copy stamps them in that order. */
struct vkla_prof_rec {
    bool counting;
    vkla_prof_launch *launch;
    uint32_t n, cap;
    uint32_t cur;          /* next launch of the copy being recorded */
    uint32_t query_base;   /* its first timestamp query */
    uint32_t dispatches;   /* of the launch being recorded */
    uint32_t groups[3];
    bool failed;           /* out of host memory, or a copy with other launches */
};

static void prof_open(vkla_context *ctx, VkCommandBuffer cmd)
{
    struct vkla_prof_rec *pr = ctx->prof;
    if (!pr)
        return;
    pr->dispatches = 0;
    memset(pr->groups, 0, sizeof(pr->groups));
    if (pr->counting)
        return;
    if (pr->cur >= pr->n) {
        pr->failed = true;
        return;
    }
    ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, ctx->timestamps,
                                pr->query_base + 2 * pr->cur);
}

static void prof_close(vkla_context *ctx, VkCommandBuffer cmd, const vkla_launch *l)
{
    struct vkla_prof_rec *pr = ctx->prof;
    if (!pr || pr->failed)
        return;
    if (!pr->counting) {
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, ctx->timestamps,
                                    pr->query_base + 2 * pr->cur + 1);
        pr->cur++;
        return;
    }
    if (pr->n == pr->cap) {
        uint32_t cap = pr->cap ? 2 * pr->cap : 16;
        vkla_prof_launch *nl = realloc(pr->launch, cap * sizeof(*nl));
        if (!nl) {
            pr->failed = true;
            return;
        }
        pr->launch = nl;
        pr->cap = cap;
    }
    vkla_prof_launch *e = &pr->launch[pr->n++];
    e->name = l->pipe->name;
    memcpy(e->groups, pr->groups, sizeof(e->groups));
    e->dispatches = pr->dispatches;
    e->flops = l->flops;
    e->bytes = l->bytes;
}

static void prof_dispatch(vkla_context *ctx, uint32_t x, uint32_t y, uint32_t z)
{
    struct vkla_prof_rec *pr = ctx->prof;
    if (!pr)
        return;
    if (!pr->dispatches) {
        pr->groups[0] = x;
        pr->groups[1] = y;
        pr->groups[2] = z;
    }
    pr->dispatches++;
}

vkla_result vkla_context_profile(vkla_context *ctx, vkla_profile *profile)
{
    if (!ctx)
        return VKLA_ERROR_NULL_POINTER;
    if (profile && !profile->kernels && profile->capacity)
        return vkla__fail(ctx, VKLA_ERROR_NULL_POINTER,
                          "profile: kernels is NULL with a capacity of %u", profile->capacity);
    ctx->profile = profile;
    return VKLA_SUCCESS;
}

vkla_chunk_sums vkla__chunk_sums(const vkla_seqs *s, uint32_t C)
{
    vkla_chunk_sums cs = {0, 0, 0, 0};
    for (uint32_t i = 0; i < s->n; i++) {
        double L = vkla__seq_len(s, i), full = C ? floor(L / C) : 0, rem = L - full * C;
        cs.n += full + (rem > 0);
        cs.s1 += L;
        cs.s2 += full * C * C + rem * rem;
        cs.s3 += full * C * C * C + rem * rem * rem;
    }
    return cs;
}

/* VKLA_GRID_SEQ_LANES: one lane per (sequence, head) of the split, heads fastest, grid_x lanes
 * per workgroup, one dispatch along x. */
static vkla_result launch_seq_lanes(vkla_context *ctx, VkCommandBuffer cmd, const vkla_split *sp,
                                    const vkla_launch *l, uint32_t *push, uint32_t ny)
{
    const uint64_t lanes = (uint64_t)(sp->s1 - sp->s0) * ny;
    const uint64_t groups = l->grid_x ? (lanes + l->grid_x - 1) / l->grid_x : 0;
    if (groups > ctx->caps.props.limits.maxComputeWorkGroupCount[0])
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "dispatch grid too large for this device");
    if (l->split_word >= 0) {
        push[l->split_word + 0] = sp->h0;
        push[l->split_word + 1] = sp->s0;
        push[l->split_word + 2] = sp->s1;
        push[l->split_word + 3] = sp->h1;
    }
    ctx->vk.vkCmdPushConstants(cmd, l->pipe->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                               l->push_words * 4, push);
    if (groups) {
        ctx->vk.vkCmdDispatch(cmd, (uint32_t)groups, 1, 1);
        prof_dispatch(ctx, (uint32_t)groups, 1, 1);
    }
    return VKLA_SUCCESS;
}

/* One piece of a launch (no profile stamps). */
static vkla_result launch_piece(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                                const vkla_split *sp, const vkla_launch *l)
{
    uint64_t align = ctx->caps.props.limits.minStorageBufferOffsetAlignment;
    VkDescriptorBufferInfo infos[VKLA_MAX_BINDINGS];
    VkWriteDescriptorSet writes[VKLA_MAX_BINDINGS];
    uint32_t push[VKLA_PUSH_BYTES / 4];
    memcpy(push, l->push, sizeof(push));
    for (uint32_t i = 0; i < l->nbind; i++) {
        const vkla_bind *b = &l->binds[i];
        if (!b->buf) {
            infos[i] = (VkDescriptorBufferInfo){ctx->dummy->buffer, 0, VK_WHOLE_SIZE};
        } else {
            uint64_t lo, hi;
            window(s, sp, b, &lo, &hi);
            uint64_t abs_lo = b->buf->base + lo, abs_hi = b->buf->base + hi;
            uint64_t start = abs_lo / align * align;
            uint64_t size = vkla__align_up(abs_hi - start, 4);
            if (start + size > b->buf->base + b->buf->size)
                size = abs_hi - start;
            infos[i] = (VkDescriptorBufferInfo){b->buf->buffer, start, size};
            /* element index of the tensor's own start, relative to the window start;
             * may be "negative" (uint arithmetic wraps consistently in the shader) */
            int64_t base = ((int64_t)(b->buf->base + b->offset) - (int64_t)start) / (int64_t)b->esize;
            if (l->base_word[i] >= 0)
                push[l->base_word[i]] = (uint32_t)base;
        }
        writes[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                           .dstBinding = i,
                                           .descriptorCount = 1,
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .pBufferInfo = &infos[i]};
    }
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, l->pipe->pipeline);
    ctx->vk.vkCmdPushDescriptorSetKHR(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, l->pipe->layout, 0,
                                      l->nbind, writes);
    uint32_t ny = sp->h1 - sp->h0;
    if (l->grid_z == VKLA_GRID_SEQ_LANES)
        return launch_seq_lanes(ctx, cmd, sp, l, push, ny);
    uint64_t z0, nz;
    if (l->grid_z == VKLA_GRID_CHUNKS) {
        z0 = s->chunk_off[sp->s0];
        nz = s->chunk_off[sp->s1] - z0;
    } else {
        z0 = sp->s0;
        nz = sp->s1 - sp->s0;
    }
    uint32_t maxz = ctx->caps.props.limits.maxComputeWorkGroupCount[2];
    if (l->grid_x > ctx->caps.props.limits.maxComputeWorkGroupCount[0] ||
        ny > ctx->caps.props.limits.maxComputeWorkGroupCount[1])
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "dispatch grid too large for this device");
    for (uint64_t z = 0; z < nz;) {
        uint32_t n = (uint32_t)(nz - z < maxz ? nz - z : maxz);
        if (l->split_word >= 0) {
            push[l->split_word + 0] = sp->h0;
            push[l->split_word + 1] = l->grid_z == VKLA_GRID_SEQS ? (uint32_t)(z0 + z) : sp->s0;
            push[l->split_word + 2] = l->grid_z == VKLA_GRID_CHUNKS ? (uint32_t)(z0 + z) : 0;
        }
        ctx->vk.vkCmdPushConstants(cmd, l->pipe->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                   l->push_words * 4, push);
        if (n && l->grid_x && ny) {
            ctx->vk.vkCmdDispatch(cmd, l->grid_x, ny, n);
            prof_dispatch(ctx, l->grid_x, ny, n);
        }
        z += n;
        if (z < nz)
            vkla__compute_barrier(ctx, cmd);
    }
    return VKLA_SUCCESS;
}

vkla_result vkla__launch(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                         const vkla_split *sp, const vkla_launch *l)
{
    prof_open(ctx, cmd);
    vkla_result r = launch_piece(ctx, cmd, s, sp, l);
    prof_close(ctx, cmd, l);
    return r;
}

vkla_result vkla__launch_splits(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                                const vkla_split *splits, uint32_t nsplit, const vkla_launch *l)
{
    vkla_result r = VKLA_SUCCESS;
    prof_open(ctx, cmd);
    for (uint32_t i = 0; i < nsplit && r == VKLA_SUCCESS; i++) {
        /* pieces write disjoint outputs, but their windows (and the placeholder buffer) may
         * overlap: keep them ordered so synchronization validation stays quiet */
        if (i)
            vkla__compute_barrier(ctx, cmd);
        r = launch_piece(ctx, cmd, s, &splits[i], l);
    }
    prof_close(ctx, cmd, l);
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Timing                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, uint32_t n)
{
    qsort(v, n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Records warmup copies of the op in one submission; with pr, the first is where the launches
 * are listed. */
static vkla_result bench_warmup(vkla_context *ctx, vkla_record_fn rec, const void *args,
                                uint32_t warmup, struct vkla_prof_rec *pr)
{
    VkCommandBuffer cmd;
    vkla_result r;
    if ((r = vkla__begin_run(ctx, &cmd)) != VKLA_SUCCESS)
        return r;
    for (uint32_t i = 0; i < warmup; i++) {
        ctx->prof = i == 0 ? pr : NULL;
        r = rec(ctx, cmd, args);
        ctx->prof = NULL;
        if (r != VKLA_SUCCESS) {
            ctx->vk.vkEndCommandBuffer(cmd);
            return r;
        }
        vkla__compute_barrier(ctx, cmd);
    }
    if (pr && pr->failed)
        r = vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    if (r == VKLA_SUCCESS)
        r = vkla__submit_wait(ctx);
    else
        ctx->vk.vkEndCommandBuffer(cmd);
    return r;
}

/* Medians of the launches' and of the whole calls' times into ctx->profile. */
static vkla_result profile_fill(vkla_context *ctx, const struct vkla_prof_rec *pr,
                                const uint64_t *ts, uint32_t reps, uint64_t mask, double period,
                                const double *times_us)
{
    vkla_profile *out = ctx->profile;
    double *t = malloc(reps * sizeof(double));
    if (!t)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    uint32_t qs = 2 + 2 * pr->n;
    for (uint32_t j = 0; j < pr->n && j < out->capacity; j++) {
        for (uint32_t i = 0; i < reps; i++) {
            const uint64_t *q = ts + (uint64_t)i * qs + 2 + 2 * j;
            t[i] = (double)((q[1] - q[0]) & mask) * period / 1000.0;
        }
        vkla_kernel_time *k = &out->kernels[j];
        memset(k, 0, sizeof(*k));
        snprintf(k->name, sizeof(k->name), "%s", pr->launch[j].name);
        memcpy(k->groups, pr->launch[j].groups, sizeof(k->groups));
        k->dispatches = pr->launch[j].dispatches;
        k->time_us = median_of(t, reps);
        k->flops = pr->launch[j].flops;
        k->bytes = pr->launch[j].bytes;
    }
    memcpy(t, times_us, reps * sizeof(double));
    out->total_us = median_of(t, reps);
    out->count = pr->n;
    out->reps = reps;
    free(t);
    return VKLA_SUCCESS;
}

vkla_result vkla__bench(vkla_context *ctx, vkla_record_fn rec, const void *args, uint32_t warmup,
                        uint32_t reps, double *times_us)
{
    if (!times_us || reps == 0)
        return vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "bench: reps must be >= 1 and times_us set");
    vkla_device_info info;
    vkla_context_device_info(ctx, &info);
    if (info.timestamp_valid_bits == 0)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "the queue has no timestamp support");
    /* profiled: the first warm-up copy lists the launches, every timed copy stamps each */
    struct vkla_prof_rec prof, *pr = NULL;
    if (ctx->profile) {
        memset(&prof, 0, sizeof(prof));
        prof.counting = true;
        pr = &prof;
        if (warmup == 0)
            warmup = 1;
    }
    vkla_result r = VKLA_SUCCESS;
    uint64_t *ts = NULL;
    /* warm-up in its own submission (pipelines created, caches warm) */
    if (warmup && (r = bench_warmup(ctx, rec, args, warmup, pr)) != VKLA_SUCCESS)
        goto done;
    uint32_t qs = 2 + (pr ? 2 * pr->n : 0); /* queries per copy */
    if ((uint64_t)qs * reps > UINT32_MAX / 2) {
        r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT, "bench: too many repetitions");
        goto done;
    }
    uint32_t nq = qs * reps;
    if (ctx->timestamps && ctx->timestamp_count < nq) {
        ctx->vk.vkDestroyQueryPool(ctx->device, ctx->timestamps, NULL);
        ctx->timestamps = VK_NULL_HANDLE;
    }
    if (!ctx->timestamps) {
        VkQueryPoolCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                     .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = nq};
        VkResult vr = ctx->vk.vkCreateQueryPool(ctx->device, &qci, NULL, &ctx->timestamps);
        if (vr != VK_SUCCESS) {
            r = vkla__vkfail(ctx, vr, "vkCreateQueryPool");
            goto done;
        }
        ctx->timestamp_count = nq;
    }
    VkCommandBuffer cmd;
    if ((r = vkla__begin_run(ctx, &cmd)) != VKLA_SUCCESS)
        goto done;
    ctx->vk.vkCmdResetQueryPool(cmd, ctx->timestamps, 0, nq);
    if (pr)
        pr->counting = false;
    for (uint32_t i = 0; i < reps; i++) {
        vkla__compute_barrier(ctx, cmd);
        /* BOTTOM_OF_PIPE: the start stamp waits for all earlier work (the previous repetition)
         * to finish; a TOP_OF_PIPE stamp could be taken while it still runs and would charge
         * its tail to this repetition. */
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, ctx->timestamps, qs * i);
        if (pr) {
            pr->cur = 0;
            pr->query_base = qs * i + 2;
        }
        ctx->prof = pr;
        r = rec(ctx, cmd, args);
        ctx->prof = NULL;
        if (r == VKLA_SUCCESS && pr && (pr->failed || pr->cur != pr->n))
            r = vkla__fail(ctx, VKLA_ERROR_INVALID_ARGUMENT,
                           "profile: the op recorded other launches in a later repetition");
        if (r != VKLA_SUCCESS) {
            ctx->vk.vkEndCommandBuffer(cmd);
            goto done;
        }
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, ctx->timestamps, qs * i + 1);
    }
    if ((r = vkla__submit_wait(ctx)) != VKLA_SUCCESS)
        goto done;
    ts = malloc((size_t)nq * sizeof(uint64_t));
    if (!ts) {
        r = vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
        goto done;
    }
    VkResult vr = ctx->vk.vkGetQueryPoolResults(ctx->device, ctx->timestamps, 0, nq,
                                                nq * sizeof(uint64_t), ts, sizeof(uint64_t),
                                                VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (vr != VK_SUCCESS) {
        r = vkla__vkfail(ctx, vr, "vkGetQueryPoolResults");
        goto done;
    }
    uint64_t mask = info.timestamp_valid_bits >= 64 ? UINT64_MAX
                                                    : ((1ull << info.timestamp_valid_bits) - 1);
    for (uint32_t i = 0; i < reps; i++) {
        uint64_t d = (ts[qs * i + 1] - ts[qs * i]) & mask; /* wraps within the valid bits */
        times_us[i] = (double)d * info.timestamp_period_ns / 1000.0;
    }
    if (pr)
        r = profile_fill(ctx, pr, ts, reps, mask, info.timestamp_period_ns, times_us);
done:
    free(ts);
    if (pr)
        free(pr->launch);
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* dtype conversion                                                                            */
/* ------------------------------------------------------------------------------------------ */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

static uint16_t f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* subnormal or zero in f16: round half to even on the scaled value */
        float af = u2f(a);
        float scaled = af * 16777216.0f; /* 2^24: f16 subnormal ulp is 2^-24 */
        uint32_t q = (uint32_t)scaled;
        float rem = scaled - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t mant = a & 0x7fffffu;
    uint32_t exp = (a >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0)
        return u2f(sign) + (sign ? -1.0f : 1.0f) * ldexpf((float)mant, -24);
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

vkla_result vkla_convert(void *dst, vkla_dtype dt, const void *src, vkla_dtype st, size_t n)
{
    if ((!dst || !src) && n)
        return VKLA_ERROR_NULL_POINTER;
    if (dt == VKLA_DTYPE_I32 || st == VKLA_DTYPE_I32) {
        if (dt != st)
            return VKLA_ERROR_DTYPE_MISMATCH;
        memmove(dst, src, n * 4);
        return VKLA_SUCCESS;
    }
    if ((unsigned)dt > VKLA_DTYPE_BF16 || (unsigned)st > VKLA_DTYPE_BF16)
        return VKLA_ERROR_DTYPE_MISMATCH;
    for (size_t i = 0; i < n; i++) {
        float f;
        switch (st) {
        case VKLA_DTYPE_F16: f = f16_to_f32(((const uint16_t *)src)[i]); break;
        case VKLA_DTYPE_BF16: f = bf16_to_f32(((const uint16_t *)src)[i]); break;
        default: f = ((const float *)src)[i]; break;
        }
        switch (dt) {
        case VKLA_DTYPE_F16: ((uint16_t *)dst)[i] = f32_to_f16(f); break;
        case VKLA_DTYPE_BF16: ((uint16_t *)dst)[i] = f32_to_bf16(f); break;
        default: ((float *)dst)[i] = f; break;
        }
    }
    return VKLA_SUCCESS;
}

void vkla__order_after_earlier(vkla_context *ctx, VkCommandBuffer cmd)
{
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                      VK_ACCESS_TRANSFER_WRITE_BIT);
}

void vkla__bind_seq_tables(const vkla_seqs *s, vkla_buffer *buf, uint64_t off_seq,
                           uint64_t off_chunk, vkla_bind *seq, vkla_bind *chunk)
{
    if (!s->cu)
        return;
    *seq = vkla__bind_region(buf, off_seq, 16, VKLA_ROWS_WHOLE, 0, 0, 0, (uint64_t)s->n * 16);
    if (s->chunk && s->chunk_off)
        *chunk = vkla__bind_region(buf, off_chunk, 8, VKLA_ROWS_WHOLE, 0, 0, 0, s->nchunks * 8);
}

vkla_result vkla__upload_seq_tables(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                                    vkla_buffer *buf, uint64_t off_seq, uint64_t off_chunk)
{
    if (!s->cu)
        return VKLA_SUCCESS;
    bool chunked = s->chunk && s->chunk_off;
    uint32_t *seqt = calloc((size_t)s->n * 4 + 4, sizeof(uint32_t));
    uint32_t *cht = chunked ? calloc((size_t)s->nchunks * 2 + 2, sizeof(uint32_t)) : NULL;
    if (!seqt || (chunked && !cht)) {
        free(seqt);
        free(cht);
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    for (uint32_t i = 0; i < s->n; i++) {
        seqt[4 * i + 0] = (uint32_t)s->cu[i];
        seqt[4 * i + 1] = vkla__seq_len(s, i);
        seqt[4 * i + 2] = chunked ? s->chunk_off[i] : 0;
        for (uint32_t c = chunked ? s->chunk_off[i] : 0; chunked && c < s->chunk_off[i + 1]; c++) {
            cht[2 * c + 0] = i;
            cht[2 * c + 1] = (c - s->chunk_off[i]) * s->chunk;
        }
    }
    vkla_result r = vkla__update_buffer(ctx, cmd, buf, off_seq, seqt, (uint64_t)s->n * 16);
    if (r == VKLA_SUCCESS && chunked && s->nchunks)
        r = vkla__update_buffer(ctx, cmd, buf, off_chunk, cht, s->nchunks * 8);
    free(seqt);
    free(cht);
    vkla__barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    return r;
}
