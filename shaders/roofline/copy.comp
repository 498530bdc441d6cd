#version 450
// Roofline probe: copy bandwidth. dst[i] = src[i] over pc.n vec4 elements with a grid-stride
// loop (consecutive threads touch consecutive 16-byte elements: fully coalesced).
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Params {
    uint n;   // vec4 elements
} pc;

layout(std430, binding = 0) readonly buffer SrcB { vec4 src[]; };
layout(std430, binding = 1) writeonly buffer DstB { vec4 dst[]; };

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride)
        dst[i] = src[i];
}
