#version 450
// acc[i] += x[i] over pc.n floats: the outputs that a call split along T sums over its pieces.
// Binding windows start at the aligned offset before each view; pc.acc0 and pc.x0 are the
// views' first elements within them.
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Params {
    uint n;
    uint acc0;
    uint x0;
} pc;

layout(std430, binding = 0) buffer AccB { float acc[]; };
layout(std430, binding = 1) readonly buffer XB { float x[]; };

void main()
{
    const uint i = gl_GlobalInvocationID.x;
    if (i < pc.n)
        acc[pc.acc0 + i] += x[pc.x0 + i];
}
