/* Compute pipelines: embedded SPIR-V lookup, lazy creation with specialization constants
 * through the context's VkPipelineCache, and push-descriptor layouts. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Generated at build time from shaders/ (see CMakeLists.txt). */
extern const vkla_spirv vkla_spirv_table[];
extern const uint32_t vkla_spirv_count;

const vkla_spirv *vkla__find_spirv(const char *name)
{
    for (uint32_t i = 0; i < vkla_spirv_count; i++)
        if (strcmp(vkla_spirv_table[i].name, name) == 0)
            return &vkla_spirv_table[i];
    return NULL;
}

/* One descriptor set layout per binding count: bindings 0..n-1, all storage buffers,
 * push descriptors, and a 128-byte push constant range. */
static vkla_result get_layout(vkla_context *ctx, uint32_t n, VkPipelineLayout *out)
{
    if (n > VKLA_MAX_BINDINGS)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "too many bindings (%u)", n);
    if (ctx->layouts[n]) {
        *out = ctx->layouts[n];
        return VKLA_SUCCESS;
    }
    VkDescriptorSetLayoutBinding b[VKLA_MAX_BINDINGS];
    for (uint32_t i = 0; i < n; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dl = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR,
        .bindingCount = n,
        .pBindings = b};
    VkResult vr = ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &dl, NULL, &ctx->set_layouts[n]);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkCreateDescriptorSetLayout");
    VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0,
                               .size = VKLA_PUSH_BYTES};
    VkPipelineLayoutCreateInfo pl = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                     .setLayoutCount = 1,
                                     .pSetLayouts = &ctx->set_layouts[n],
                                     .pushConstantRangeCount = 1,
                                     .pPushConstantRanges = &pcr};
    vr = ctx->vk.vkCreatePipelineLayout(ctx->device, &pl, NULL, &ctx->layouts[n]);
    if (vr != VK_SUCCESS)
        return vkla__vkfail(ctx, vr, "vkCreatePipelineLayout");
    *out = ctx->layouts[n];
    return VKLA_SUCCESS;
}

vkla_result vkla__get_pipeline(vkla_context *ctx, const char *name, const uint32_t *spec,
                               uint32_t nspec, uint32_t nbindings, uint32_t required_subgroup,
                               vkla_pipeline **out)
{
    if (nspec > 16)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "too many specialization constants");
    for (vkla_pipeline *p = ctx->pipelines; p; p = p->next) {
        if (p->nspec == nspec && p->nbindings == nbindings &&
            p->required_subgroup == required_subgroup && strcmp(p->name, name) == 0 &&
            memcmp(p->spec, spec, nspec * sizeof(uint32_t)) == 0) {
            *out = p;
            return VKLA_SUCCESS;
        }
    }
    const vkla_spirv *sp = vkla__find_spirv(name);
    if (!sp)
        return vkla__fail(ctx, VKLA_ERROR_UNSUPPORTED, "kernel '%s' is not in this build", name);
    VkPipelineLayout layout = VK_NULL_HANDLE;
    vkla_result r = get_layout(ctx, nbindings, &layout);
    if (r != VKLA_SUCCESS)
        return r;

    vkla_pipeline *p = calloc(1, sizeof(*p));
    if (!p)
        return vkla__fail(ctx, VKLA_ERROR_OUT_OF_MEMORY, "out of host memory");
    snprintf(p->name, sizeof(p->name), "%s", name);
    memcpy(p->spec, spec, nspec * sizeof(uint32_t));
    p->nspec = nspec;
    p->nbindings = nbindings;
    p->required_subgroup = required_subgroup;
    p->layout = layout;

    VkShaderModuleCreateInfo smci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                     .codeSize = *sp->size, .pCode = sp->code};
    VkShaderModule mod;
    VkResult vr = ctx->vk.vkCreateShaderModule(ctx->device, &smci, NULL, &mod);
    if (vr != VK_SUCCESS) {
        free(p);
        return vkla__vkfail(ctx, vr, "vkCreateShaderModule");
    }
    VkSpecializationMapEntry entries[16];
    for (uint32_t i = 0; i < nspec; i++)
        entries[i] = (VkSpecializationMapEntry){.constantID = i,
                                                .offset = i * (uint32_t)sizeof(uint32_t),
                                                .size = sizeof(uint32_t)};
    VkSpecializationInfo si = {.mapEntryCount = nspec, .pMapEntries = entries,
                               .dataSize = nspec * sizeof(uint32_t), .pData = p->spec};
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rss = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = required_subgroup};
    VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .pNext = (required_subgroup && ctx->caps.size_control) ? &rss : NULL,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod,
                  .pName = "main",
                  .pSpecializationInfo = &si},
        .layout = layout};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vr = ctx->vk.vkCreateComputePipelines(ctx->device, ctx->cache, 1, &cpi, NULL, &p->pipeline);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    vkla__log(ctx, VKLA_MESSAGE_INFO, "pipeline %s created in %.1f ms", name,
              (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    ctx->vk.vkDestroyShaderModule(ctx->device, mod, NULL);
    if (vr != VK_SUCCESS) {
        free(p);
        return vkla__vkfail(ctx, vr, "vkCreateComputePipelines");
    }
    p->next = ctx->pipelines;
    ctx->pipelines = p;
    *out = p;
    return VKLA_SUCCESS;
}

void vkla__destroy_pipelines(vkla_context *ctx)
{
    for (vkla_pipeline *p = ctx->pipelines; p;) {
        vkla_pipeline *n = p->next;
        ctx->vk.vkDestroyPipeline(ctx->device, p->pipeline, NULL);
        free(p);
        p = n;
    }
    ctx->pipelines = NULL;
    for (uint32_t i = 0; i <= VKLA_MAX_BINDINGS; i++) {
        if (ctx->layouts[i])
            ctx->vk.vkDestroyPipelineLayout(ctx->device, ctx->layouts[i], NULL);
        if (ctx->set_layouts[i])
            ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, ctx->set_layouts[i], NULL);
        ctx->layouts[i] = VK_NULL_HANDLE;
        ctx->set_layouts[i] = VK_NULL_HANDLE;
    }
}
