#version 450
// LION: copies a [B, T, H, X] tensor of the storage dtype (binding 0, any row strides, X = pc.K)
// into packed fp32 rows of Xp = pc.xs elements (binding 8, zero-padded to a multiple of 4), so
// that the heavy kernels always read aligned fp32 vectors. With F_ONES (backward pass) column X
// of the packed rows is 1: the ones column of the normalizer, as one more value column.
// Grid: x = 1, y = heads, z = 64-token tiles. Lanes: 64.
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
    const uint tb = t0 + local0;
    const uint nq = pc.xs / 4u;
    for (uint e = lid; e < L * nq; e += gl_WorkGroupSize.x) {
        const uint u = e / nq, q4 = e % nq;
        vec4 x = ld_q4(q_row(b, tb + u, h), 4u * q4);
        if ((pc.cfg & F_ONES) != 0u && pc.K >= 4u * q4 && pc.K < 4u * q4 + 4u)
            x[pc.K - 4u * q4] = 1.0;
        st4_buf[(pc.st_base + ((b * pc.T + tb + u) * pc.H + h) * pc.xs) / 4u + q4] = x;
    }
}
