#version 450
// LION backward, normalize only: the upstream gradient of the augmented output. The forward with
// the ones column (V' = [V, 1]) gives per token n'_i = (n_i, d_i - eps) (binding 8, packed rows
// of pc.xs floats); do (binding 9, packed, same row length) becomes in place
//   do'_i[c] = do_i[c] / d_i (c < V),   do'_i[V] = -(do_i . o_i) / d_i,   o_i = n_i / d_i,
// the gradient with respect to (n_i, d_i). pc.V is the value width V.
// Grid: x = 1, y = heads, z = 64-token tiles. Lanes: 64 (one token each).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, TW, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(TW, len - local0);
    if (lid >= L)
        return;
    const uint t = t0 + local0 + lid;
    const uint row = ((b * pc.T + t) * pc.H + h) * pc.xs;
    const uint nrow = pc.st_base + row, drow = pc.z_base + row;
    const float den = st_buf[nrow + pc.V] + pc.eps;
    const float inv = 1.0 / den;
    float dot = 0.0;
    for (uint x = 0u; x < pc.V; x++) {
        const float d = z_buf[drow + x];
        dot += d * st_buf[nrow + x];
        z_buf[drow + x] = d * inv;
    }
    z_buf[drow + pc.V] = -dot * inv * inv;
}
