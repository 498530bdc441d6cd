/* Backward pass of delta_rule (SPEC section 4): argument checks, scratch layout, and the chunkwise
 * gradient kernels. Kernels: shaders/delta_rule/bwd_*.comp. */
#include "internal.h"

#define OP "delta_rule_backward"

static vkla_result op_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)
{
    (void)args;
    *bytes = 0;
    return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, OP ": not built yet");
}

static vkla_result op_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args,
                             bool run_mode)
{
    (void)cmd;
    (void)run_mode;
    uint64_t n;
    return op_scratch(ctx, args, &n);
}

static const vkla_op_impl IMPL = {OP, op_scratch, op_record};

vkla_result vkla_delta_rule_backward_record(vkla_context *ctx, VkCommandBuffer cmd,
                                    const vkla_delta_rule_backward_args *args)
{
    return vkla__op_record(&IMPL, ctx, cmd, args);
}

vkla_result vkla_delta_rule_backward_run(vkla_context *ctx, const vkla_delta_rule_backward_args *args)
{
    return vkla__op_run(&IMPL, ctx, args);
}

vkla_result vkla_delta_rule_backward_scratch_size(vkla_context *ctx,
                                          const vkla_delta_rule_backward_args *args, uint64_t *bytes)
{
    return vkla__op_scratch_size(&IMPL, ctx, args, bytes);
}

vkla_result vkla_delta_rule_backward_bench(vkla_context *ctx, const vkla_delta_rule_backward_args *args,
                                   uint32_t warmup, uint32_t reps, double *times_us)
{
    return vkla__op_bench(&IMPL, ctx, args, args ? args->scratch : NULL, warmup, reps, times_us);
}
