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
const uint C4 = C / 4u;
shared float s_g[C];
shared float s_ik[C];
shared float s_iq[C];
shared float s_qe[C]; // e^G / |q|
const uint RM = C / 8u; // step 0: rows and columns per thread
const uint KT4 = 4u;    // step 0: key columns per staged tile, in vec4s
shared vec4 s_q[C * KT4];
shared vec4 s_k[C * KT4];

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
    const uint brv = br / 4u;

    for (uint j = lid; j < C; j += gl_WorkGroupSize.x) {
        const vec4 inf = work_buf[work_info(rec) + j];
        s_g[j] = inf.x;
        s_ik[j] = inf.y;
        s_iq[j] = inf.z;
        s_qe[j] = exp(inf.x) * inf.z;
    }
    barrier();

    if (BWD_STEP == 0u) {
        // As the forward's chunk_output: 8 x 8 threads, thread (ti, tj) owns rows ti*RM.. and
        // columns tj*RM.. (RM = C/8); q and k are staged in shared memory in tiles of 16 key
        // columns, so each element is read from the buffers once. One workgroup per chunk.
        if (gl_WorkGroupID.x > 0u)
            return;
        const uint ti = lid / 8u, tj = lid % 8u, i0 = ti * RM, j0 = tj * RM;
        const bool low = tj <= ti; // the block touches the lower triangle
        float qk[RM][RM], kk[RM][RM];
        for (uint a = 0; a < RM; a++)
            for (uint m = 0; m < RM; m++) {
                qk[a][m] = 0.0;
                kk[a][m] = 0.0;
            }
        [[dont_unroll]] for (uint k0 = 0; k0 < K; k0 += 4u * KT4) {
            [[dont_unroll]] for (uint e = lid; e < C * KT4; e += 64u) {
                const uint j = e / KT4, x0 = k0 + 4u * (e % KT4);
                const bool ok = j < L && x0 < K;
                s_q[e] = ok ? load_q4(b, tb + j, hq, x0) : vec4(0.0);
                s_k[e] = ok ? load_k4(b, tb + j, hq, x0) : vec4(0.0);
            }
            barrier();
            if (low)
                for (uint xg = 0; xg < KT4; xg++) {
                    vec4 kj[RM];
                    for (uint m = 0; m < RM; m++)
                        kj[m] = s_k[(j0 + m) * KT4 + xg];
                    for (uint a = 0; a < RM; a++) {
                        const vec4 qi = s_q[(i0 + a) * KT4 + xg], ki = s_k[(i0 + a) * KT4 + xg];
                        for (uint m = 0; m < RM; m++) {
                            qk[a][m] += dot(qi, kj[m]);
                            kk[a][m] += dot(ki, kj[m]);
                        }
                    }
                }
            barrier();
        }
        const uint C4F = 4u * C4;
        for (uint a = 0; a < RM; a++) {
            const uint i = i0 + a;
            for (uint m = 0; m < RM; m++) {
                const uint j = j0 + m;
                const float d = i < L && j <= i ? exp(s_g[i] - s_g[j]) * s_ik[j] : 0.0;
                bwd_buf[br + 4u * R_QK + i * C4F + j] = qk[a][m] * d * s_iq[i];
                bwd_buf[br + 4u * R_KK + i * C4F + j] = j < i ? kk[a][m] * d * s_ik[i] : 0.0;
            }
        }
        return;
    }
    // 8 rows x 4 value column groups per element (VB groups of 4 vec4 columns): on CPU
    // drivers every load costs a loop over the lanes, so each load feeds 8 to 32 multiply-adds.
    // Row j of QK at columns i0.. is two vec4s (zero right of the diagonal).
    const uint VB = (V4 + 3u) / 4u;
    [[dont_unroll]] for (uint e = elem0(); e < (C / 8u) * VB; e += elem_step()) {
        const uint i0 = 8u * (e / VB), v0 = 4u * (e % VB);
        vec4 acc[8][4];
        [[unroll]] for (uint a = 0; a < 8u; a++)
            [[unroll]] for (uint u = 0; u < 4u; u++)
                acc[a][u] = vec4(0.0);
        [[dont_unroll]] for (uint j = i0; j < L; j++) {
            vec4 o[4];
            [[unroll]] for (uint u = 0; u < 4u; u++)
                o[u] = v0 + u < V4 ? load_o4(b, tb + j, h, 4u * (v0 + u)) : vec4(0.0);
            const vec4 m0 = bwd4_buf[brv + R_QK + j * C4 + i0 / 4u]; // QK[j][i0 + a]
            const vec4 m1 = bwd4_buf[brv + R_QK + j * C4 + i0 / 4u + 1u];
            [[unroll]] for (uint a = 0; a < 4u; a++)
                [[unroll]] for (uint u = 0; u < 4u; u++) {
                    acc[a][u] += m0[a] * o[u];
                    acc[a + 4u][u] += m1[a] * o[u];
                }
        }
        [[unroll]] for (uint a = 0; a < 8u; a++)
            [[unroll]] for (uint u = 0; u < 4u; u++)
                if (v0 + u < V4)
                    bwd4_buf[brv + R_DVP + (i0 + a) * V4 + v0 + u] = pc.scale * acc[a][u];
    }
    // 8 key rows x 4 value column groups per element
    [[dont_unroll]] for (uint e = elem0(); e < ((K4 + 1u) / 2u) * VB; e += elem_step()) {
        const uint x0 = 8u * (e / VB), v0 = 4u * (e % VB);
        vec4 acc[8][4];
        [[unroll]] for (uint a = 0; a < 8u; a++)
            [[unroll]] for (uint u = 0; u < 4u; u++)
                acc[a][u] = vec4(0.0);
        [[dont_unroll]] for (uint j = 0; j < L; j++) {
            vec4 o[4];
            [[unroll]] for (uint u = 0; u < 4u; u++)
                o[u] = v0 + u < V4 ? load_o4(b, tb + j, h, 4u * (v0 + u)) : vec4(0.0);
            const vec4 q0 = load_q4(b, tb + j, hq, x0) * s_qe[j];
            const vec4 q1 = x0 + 4u < K ? load_q4(b, tb + j, hq, x0 + 4u) * s_qe[j] : vec4(0.0);
            [[unroll]] for (uint a = 0; a < 4u; a++)
                [[unroll]] for (uint u = 0; u < 4u; u++) {
                    acc[a][u] += q0[a] * o[u];
                    acc[a + 4u][u] += q1[a] * o[u];
                }
        }
        [[unroll]] for (uint a = 0; a < 8u; a++)
            [[unroll]] for (uint u = 0; u < 4u; u++)
                if (x0 + a < K && v0 + u < V4)
                    bwd4_buf[brv + R_DSN + (x0 + a) * V4 + v0 + u] = pc.scale * acc[a][u];
    }
}
