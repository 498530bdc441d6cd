/* Prints the size of every struct the Python package mirrors with ctypes, and the offset and
 * size of each of its fields: "struct field offset size" lines ("struct - 0 size" for the
 * whole struct). python/tests/test_layout.py compares them with the ctypes layout. */
#include <stddef.h>
#include <stdio.h>

#include "vkla.h"

#define S(type) printf(#type " - 0 %zu\n", sizeof(type))
#define F(type, field) \
    printf(#type " " #field " %zu %zu\n", offsetof(type, field), sizeof(((type *)0)->field))

int main(void)
{
    S(vkla_tensor);
    F(vkla_tensor, buffer); F(vkla_tensor, offset); F(vkla_tensor, dtype); F(vkla_tensor, ndim);
    F(vkla_tensor, shape); F(vkla_tensor, strides);

    S(vkla_context_desc);
    F(vkla_context_desc, device); F(vkla_context_desc, validation);
    F(vkla_context_desc, sync_validation); F(vkla_context_desc, message_fn);
    F(vkla_context_desc, message_user); F(vkla_context_desc, pipeline_cache_data);
    F(vkla_context_desc, pipeline_cache_size);

    S(vkla_device_info);
    F(vkla_device_info, name); F(vkla_device_info, vendor_id); F(vkla_device_info, device_id);
    F(vkla_device_info, device_type); F(vkla_device_info, driver_name);
    F(vkla_device_info, driver_info); F(vkla_device_info, driver_version);
    F(vkla_device_info, api_version); F(vkla_device_info, subgroup_size);
    F(vkla_device_info, subgroup_min_size); F(vkla_device_info, subgroup_max_size);
    F(vkla_device_info, subgroup_arithmetic); F(vkla_device_info, subgroup_clustered);
    F(vkla_device_info, max_shared_memory); F(vkla_device_info, max_workgroup_invocations);
    F(vkla_device_info, max_storage_buffer_range);
    F(vkla_device_info, min_storage_buffer_offset_alignment);
    F(vkla_device_info, fp16_storage); F(vkla_device_info, fp16_arithmetic);
    F(vkla_device_info, bf16_arithmetic); F(vkla_device_info, int8_arithmetic);
    F(vkla_device_info, cooperative_matrix); F(vkla_device_info, push_descriptor);
    F(vkla_device_info, timestamp_period_ns); F(vkla_device_info, timestamp_valid_bits);
    F(vkla_device_info, device_local_bytes); F(vkla_device_info, variant);

#define OPTS(type) \
    F(type, form); F(type, q); F(type, k); F(type, v); F(type, o); F(type, cu_seqlens); \
    F(type, num_seqs); F(type, scale); F(type, chunk_size); F(type, scratch); \
    F(type, scratch_offset)
    S(vkla_linear_attn_args);
    OPTS(vkla_linear_attn_args);
    F(vkla_linear_attn_args, g); F(vkla_linear_attn_args, g_gamma); F(vkla_linear_attn_args, gk);
    F(vkla_linear_attn_args, h0); F(vkla_linear_attn_args, ht); F(vkla_linear_attn_args, z0);
    F(vkla_linear_attn_args, zt); F(vkla_linear_attn_args, normalize);
    F(vkla_linear_attn_args, eps);

    S(vkla_lion_args);
    OPTS(vkla_lion_args);
    F(vkla_lion_args, g); F(vkla_lion_args, g_gamma); F(vkla_lion_args, normalize);
    F(vkla_lion_args, eps);

    S(vkla_delta_rule_args);
    OPTS(vkla_delta_rule_args);
    F(vkla_delta_rule_args, beta); F(vkla_delta_rule_args, g); F(vkla_delta_rule_args, h0);
    F(vkla_delta_rule_args, ht); F(vkla_delta_rule_args, l2norm);

#define BWD(type) \
    F(type, fwd); F(type, dout); F(type, dq); F(type, dk); F(type, dv); F(type, dg); \
    F(type, scratch); F(type, scratch_offset)
    S(vkla_linear_attn_backward_args);
    BWD(vkla_linear_attn_backward_args);
    F(vkla_linear_attn_backward_args, dht); F(vkla_linear_attn_backward_args, dg_gamma);
    F(vkla_linear_attn_backward_args, dgk); F(vkla_linear_attn_backward_args, dh0);

    S(vkla_lion_backward_args);
    BWD(vkla_lion_backward_args);
    F(vkla_lion_backward_args, dg_gamma);

    S(vkla_delta_rule_backward_args);
    BWD(vkla_delta_rule_backward_args);
    F(vkla_delta_rule_backward_args, dht); F(vkla_delta_rule_backward_args, dbeta);
    F(vkla_delta_rule_backward_args, dh0);
    return 0;
}
