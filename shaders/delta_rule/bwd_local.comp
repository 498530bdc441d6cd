#version 450
// Delta rule backward, step 3 (parallel over all chunks; steps 1 and 2 are the forward's
// chunk_prep, which also stores T, and chunk_scan, which stores the entering states and V').
// With Q, K the chunk's (normalized) queries and keys and G the cumulative log gates, in two
// dispatches (BWD_STEP 0, then 1):
//   0: QK = (Q K^T) . D  (j <= i),   KK = (K K^T) . D  (j < i),   D_ij = e^(G_i - G_j)
//   1: DVP = scale QK^T dO           (the in-chunk part of dV')
//      DSN = scale (Q * e^G)^T dO    (the in-chunk part of the state gradient)
// Every exponent is <= 0. Grid: x = workgroups per chunk, y = value heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#define DR_BACKWARD 1
#include "common.glsl"
#include "bwd_layout.glsl"

const uint C = P0;
shared float s_g[C];
shared float s_ik[C];
shared float s_iq[C];
shared float s_qe[C]; // e^G / |q|

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint hq = h / pc.group;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint rec = work_rec(h, c);
    const uint br = bwd_rec(pc.beta_base, h, c);
    const uint C4F = 4u * BR_C4, V4F = 4u * BR_V4;

    for (uint j = lid; j < C; j += gl_WorkGroupSize.x) {
        const vec4 inf = work_buf[work_info(rec) + j];
        s_g[j] = inf.x;
        s_ik[j] = inf.y;
        s_iq[j] = inf.z;
        s_qe[j] = exp(inf.x) * inf.z;
    }
    barrier();

    if (BWD_STEP == 0u) {
        [[dont_unroll]] for (uint e = elem0(); e < C * C; e += elem_step()) {
            const uint i = e / C, j = e % C;
            float qk = 0.0, kk = 0.0;
            if (i < L && j <= i) {
                [[dont_unroll]] for (uint x = 0; x < K; x++) {
                    const float kj = load_k(b, tb + j, hq, x);
                    qk += load_q(b, tb + i, hq, x) * kj;
                    kk += load_k(b, tb + i, hq, x) * kj;
                }
                const float d = exp(s_g[i] - s_g[j]) * s_ik[j];
                qk *= d * s_iq[i];
                kk = j < i ? kk * d * s_ik[i] : 0.0;
            }
            bwd_buf[br + 4u * R_QK + i * C4F + j] = qk;
            bwd_buf[br + 4u * R_KK + i * C4F + j] = kk;
        }
        return;
    }
    [[dont_unroll]] for (uint e = elem0(); e < C * V; e += elem_step()) {
        const uint i = e / V, v = e % V;
        float acc = 0.0;
        [[dont_unroll]] for (uint j = i; j < L; j++)
            acc += bwd_buf[br + 4u * R_QK + j * C4F + i] * load_o(b, tb + j, h, v);
        bwd_buf[br + 4u * R_DVP + i * V4F + v] = pc.scale * acc;
    }
    [[dont_unroll]] for (uint e = elem0(); e < K * V; e += elem_step()) {
        const uint x = e / V, v = e % V;
        float acc = 0.0;
        [[dont_unroll]] for (uint j = 0; j < L; j++)
            acc += load_q(b, tb + j, hq, x) * s_qe[j] * load_o(b, tb + j, h, v);
        bwd_buf[br + 4u * R_DSN + x * V4F + v] = pc.scale * acc;
    }
}
