#version 450
// LION, rnn form, step 2: o = scale * (sum of the partials of both scans and all K tiles), with
// normalize divided by scale * (sum of the normalizer partials) + eps. See rnn_scan.comp for the
// scratch layout. Grid: x = V tiles of TW, y = heads, z = 64-token tiles.
// Lanes: 64 = 4 token rows x 16 column quads.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint c4 = lid % 16u, u0 = lid / 16u;
    const uint vt = gl_WorkGroupID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, TW, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(TW, len - local0);
    const uint tb = t0 + local0;
    const uint VS = pc.xs;
    const uint np = 2u * ((pc.K + TW - 1u) / TW);
    const uint X = np * VS;
    const uint Va = align4(pc.V);
    const uint col = vt * TW + 4u * c4;
    const uint cl = min(col, Va - 4u);   // columns past V: read a valid quad, store nothing

    for (uint u = u0; u < L; u += 4u) {
        const uint prow = pc.st_base + ((b * pc.T + tb + u) * pc.H + h) * X;
        vec4 sum = vec4(0.0);
        float dz = 0.0;
        for (uint p = 0u; p < np; p++) {
            sum += st4_buf[(prow + p * VS + cl) >> 2u];
            if (NORMALIZE)
                dz += st_buf[prow + p * VS + Va];
        }
        const float mul = NORMALIZE ? pc.scale / (pc.scale * dz + pc.eps) : pc.scale;
        if (col < Va)
            st_o4(o_row(b, tb + u, h), col, mul * sum);
    }
}
