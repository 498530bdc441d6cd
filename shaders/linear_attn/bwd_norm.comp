#version 450
// Causal linear attention, backward with normalize, step 2 (parallel over all chunks): the
// denominator d_t = scale * q_t . z_t + eps and do_t . o_t of every token, from the state
// entering the chunk and the scores A of step 1, give the upstream gradient of the
// un-normalized output: do'_t[j] = do_t[j] / d_t (j < V) and do'_t[V] = -(do_t . o_t) / d_t.
// Stores 1 / d_t and do'_t[V], and rewrites P[t][s] = do'_t . v_s (ones column included),
// times e^(G_t - G_s) without gk (the scalar decay, as step 1 stores P without normalize).
// Thread t of the workgroup owns token t. Grid: x = 1, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#include "bwd_common.glsl"

const uint NT = 64u;

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    const uint t = lid;
    const bool act = t < L;
    const uint sb = chunk_row(pc.r_state, h, c, K * VP);

    // inter-chunk parts: (q_t e^G_t) . z_in and (q_t e^G_t)^T S_in do_t
    float zin = 0.0, u = 0.0;
    for (uint x0 = 0; x0 < K; x0 += KT) {
        chunk_channel_decay(lid, b, tb, h, L, x0);
        if (act)
            for (uint xx = 0; xx < KT && x0 + xx < K; xx++) {
                const uint i = x0 + xx;
                const float qe = load_q(b, tb + t, h, i) * exp(s_gc[xx * C + t]);
                float y = 0.0;
                for (uint j = 0; j < V; j++)
                    y += scr[sb + i * VP + j] * load_do(b, tb + t, h, j);
                zin += qe * scr[sb + i * VP + V];
                u += qe * y;
            }
    }
    if (!act)
        return;
    const uint ab = chunk_row(pc.r_amat, h, c, C * C) + t * C;
    const uint pb = chunk_row(pc.r_pmat, h, c, C * C) + t * C;
    float den = 0.0, num = 0.0;
    for (uint j = 0; j <= t; j++) {
        const float a = scr[ab + j];
        den += a;
        num += a * scr[pb + j];
    }
    const float d = pc.scale * (zin + den) + pc.eps;
    const float dinv = 1.0 / d;
    const float w = -(pc.scale * (u + num) * dinv) * dinv;
    const uint nb = chunk_row(pc.r_nrm, h, c, C * 2u) + t * 2u;
    scr[nb] = dinv;
    scr[nb + 1u] = w;
    if (HAS_GK)
        for (uint j = 0; j <= t; j++)
            scr[pb + j] = scr[pb + j] * dinv + w;
    else
        for (uint j = 0; j <= t; j++)
            scr[pb + j] = (scr[pb + j] * dinv + w) * exp(s_gs[t] - s_gs[j]);
}
