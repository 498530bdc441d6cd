#version 450
// Delta rule backward, step 4 (sequential over the chunks of a sequence, last to first;
// parallel over value heads and value columns): the state gradient. With dS the gradient of
// the state leaving chunk n (dht, or zero, for the last chunk):
//   DSN_n holds scale (Q e^G)^T dO (bwd_local); it is replaced by dS (for bwd_grad)
//   dV' = DVP + KD dS               (replaces DVP)
//   dS <- e^(G_last) dS + scale (Q e^G)^T dO - W^T dV'
// and the last dS is dh0. Each thread owns one value column: its column of dS and of dV'
// live in shared memory and no other thread touches them, so the loop needs no barriers.
// Grid: x = value tiles of VT, y = value heads, z = sequences. P0 = C, P1 = VT (threads).
#extension GL_GOOGLE_include_directive : require
#define DR_BACKWARD 1
#include "common.glsl"
#include "bwd_layout.glsl"

const uint C = P0;
const uint VT = P1;
shared float s_dS[K * VT];
shared float s_dv[C * VT];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint v = gl_WorkGroupID.x * VT + lid;
    if (v >= V)
        return;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint first = VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C);
    const uint n = (len + C - 1u) / C;
    const uint hbase = (s * pc.HV + h) * K;
    const uint V4F = 4u * BR_V4;

    [[dont_unroll]] for (uint x = 0; x < K; x++)
        s_dS[x * VT + lid] = HAS_H0 ? h0_buf[pc.h0_base + (hbase + x) * V + v] : 0.0;

    [[dont_unroll]] for (uint mc = n; mc-- > 0u;) {
        const uint c = first + mc;
        const uint L = min(C, len - mc * C);
        const uint rec = work_rec(h, c);
        const uint br = bwd_rec(pc.beta_base, h, c);
        // dV' = DVP + KD dS
        [[dont_unroll]] for (uint j = 0; j < L; j++) {
            float acc = bwd_buf[br + 4u * R_DVP + j * V4F + v];
            const uint kd = work_kd(rec) + j * K4;
            [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
                const vec4 k4 = work_buf[kd + x4];
                for (uint m = 0; m < 4u; m++)
                    if (4u * x4 + m < K)
                        acc += k4[m] * s_dS[(4u * x4 + m) * VT + lid];
            }
            s_dv[j * VT + lid] = acc;
            bwd_buf[br + 4u * R_DVP + j * V4F + v] = acc;
        }
        // dS <- e^(G_last) dS + DSN - W^T dV', and DSN <- dS
        const float dl = exp(work_buf[work_info(rec) + L - 1u].x);
        [[dont_unroll]] for (uint x = 0; x < K; x++) {
            const uint di = br + 4u * R_DSN + x * V4F + v;
            const float d = s_dS[x * VT + lid];
            float acc = dl * d + bwd_buf[di];
            bwd_buf[di] = d;
            const uint w = work_w(rec) + x / 4u;
            [[dont_unroll]] for (uint j = 0; j < L; j++)
                acc -= work_buf[w + j * K4][x % 4u] * s_dv[j * VT + lid];
            s_dS[x * VT + lid] = acc;
        }
    }
    if (HAS_HT)
        [[dont_unroll]] for (uint x = 0; x < K; x++)
            ht_buf[pc.ht_base + (hbase + x) * V + v] = s_dS[x * VT + lid];
}
