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
        // 4 x 4 blocks (rows i0.., columns j0..); blocks above the diagonal are zero
        [[dont_unroll]] for (uint e = elem0(); e < C4 * C4; e += elem_step()) {
            const uint i0 = 4u * (e / C4), j0 = 4u * (e % C4);
            vec4 qk[4], kk[4];
            [[unroll]] for (uint a = 0; a < 4u; a++) {
                qk[a] = vec4(0.0);
                kk[a] = vec4(0.0);
            }
            if (j0 <= i0 && i0 < L)
                [[dont_unroll]] for (uint x = 0; x < K; x += 4u) {
                    vec4 qi[4], ki[4], kj[4];
                    [[unroll]] for (uint a = 0; a < 4u; a++) {
                        qi[a] = i0 + a < L ? load_q4(b, tb + i0 + a, hq, x) : vec4(0.0);
                        ki[a] = i0 + a < L ? load_k4(b, tb + i0 + a, hq, x) : vec4(0.0);
                        kj[a] = j0 + a < L ? load_k4(b, tb + j0 + a, hq, x) : vec4(0.0);
                    }
                    [[unroll]] for (uint a = 0; a < 4u; a++)
                        [[unroll]] for (uint m = 0; m < 4u; m++) {
                            qk[a][m] += dot(qi[a], kj[m]);
                            kk[a][m] += dot(ki[a], kj[m]);
                        }
                }
            [[unroll]] for (uint a = 0; a < 4u; a++) {
                const uint i = i0 + a;
                [[unroll]] for (uint m = 0; m < 4u; m++) {
                    const uint j = j0 + m;
                    const float d = i < L && j <= i ? exp(s_g[i] - s_g[j]) * s_ik[j] : 0.0;
                    qk[a][m] *= d * s_iq[i];
                    kk[a][m] = j < i ? kk[a][m] * d * s_ik[i] : 0.0;
                }
                bwd4_buf[brv + R_QK + i * C4 + j0 / 4u] = qk[a];
                bwd4_buf[brv + R_KK + i * C4 + j0 / 4u] = kk[a];
            }
        }
        return;
    }
    // 4 rows x 4 value columns per element; row j of QK at columns i0.. is one vec4
    [[dont_unroll]] for (uint e = elem0(); e < C4 * V4; e += elem_step()) {
        const uint i0 = 4u * (e / V4), v4 = e % V4;
        vec4 acc[4];
        [[unroll]] for (uint a = 0; a < 4u; a++)
            acc[a] = vec4(0.0);
        [[dont_unroll]] for (uint j = i0; j < L; j++) {
            const vec4 o = load_o4(b, tb + j, h, 4u * v4);
            const vec4 m = bwd4_buf[brv + R_QK + j * C4 + i0 / 4u]; // QK[j][i0 + a], 0 above
            [[unroll]] for (uint a = 0; a < 4u; a++)
                acc[a] += m[a] * o;
        }
        [[unroll]] for (uint a = 0; a < 4u; a++)
            bwd4_buf[brv + R_DVP + (i0 + a) * V4 + v4] = pc.scale * acc[a];
    }
    [[dont_unroll]] for (uint e = elem0(); e < K4 * V4; e += elem_step()) {
        const uint x0 = 4u * (e / V4), v4 = e % V4;
        vec4 acc[4];
        [[unroll]] for (uint a = 0; a < 4u; a++)
            acc[a] = vec4(0.0);
        [[dont_unroll]] for (uint j = 0; j < L; j++) {
            const vec4 o = load_o4(b, tb + j, h, 4u * v4);
            const vec4 q = load_q4(b, tb + j, hq, x0) * s_qe[j];
            [[unroll]] for (uint a = 0; a < 4u; a++)
                acc[a] += q[a] * o;
        }
        [[unroll]] for (uint a = 0; a < 4u; a++)
            if (x0 + a < K)
                bwd4_buf[brv + R_DSN + (x0 + a) * V4 + v4] = pc.scale * acc[a];
    }
}
