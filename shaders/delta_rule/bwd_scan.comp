#version 450
// Delta rule backward, step 4 (sequential over the chunks of a sequence, last to first;
// parallel over value heads and value columns): the state gradient. With dS the gradient of
// the state leaving chunk n (dht, or zero, for the last chunk):
//   DSN_n holds scale (Q e^G)^T dO (bwd_local); it is replaced by dS (for bwd_grad)
//   dV' = DVP + KD dS               (replaces DVP)
//   dS <- e^(G_last) dS + scale (Q e^G)^T dO - W^T dV'
// and the last dS is dh0. Each thread owns four value columns (one vec4 column group): its
// columns of dS and of dV' live in shared memory and no other thread touches them, so the loop
// needs no barriers. Products run in 4 x 4 blocks (each vec4 load of KD or W feeds 16
// multiply-adds).
// Pass p (BWD_STEP) handles at most NPER chunks of each sequence, counting from its end, and
// leaves dS in carry_buf for the next pass: CPU drivers may stop an invocation after a fixed
// number of loop iterations, so no invocation walks a whole long sequence.
// Grid: x = tiles of VT column groups, y = value heads, z = sequences. P0 = C, P1 = VT
// (threads), P2 = NPER.
#extension GL_GOOGLE_include_directive : require
#define DR_BACKWARD 1
#include "common.glsl"
#include "bwd_layout.glsl"

const uint C = P0;
const uint VT = P1;
const uint NPER = P2;
shared vec4 s_dS[K * VT]; // row x of the thread's four columns at x VT + lid
shared vec4 s_dv[C * VT];

// dS row x (four columns), zero past K
vec4 ds_row(uint x, uint lid) { return x < K ? s_dS[x * VT + lid] : vec4(0.0); }

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint v4 = gl_WorkGroupID.x * VT + lid;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint first = VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C);
    const uint n = (len + C - 1u) / C;
    const uint skip = BWD_STEP * NPER; // chunks done by the earlier passes
    if (v4 >= V4 || (skip >= n && skip > 0u))
        return;
    const uint hi = n - skip, lo = hi > NPER ? hi - NPER : 0u;
    const uint hbase = (s * pc.HV + h) * K;
    const uint nv = min(4u, V - 4u * v4); // columns of this group inside V

    [[dont_unroll]] for (uint x = 0; x < K; x++) {
        vec4 d = vec4(0.0);
        const uint e = (hbase + x) * V + 4u * v4;
        for (uint m = 0; m < nv; m++)
            d[m] = skip > 0u ? carry_buf[pc.g_base + e + m] : (HAS_H0 ? h0_buf[pc.h0_base + e + m] : 0.0);
        s_dS[x * VT + lid] = d;
    }

    [[dont_unroll]] for (uint mc = hi; mc-- > lo;) {
        const uint c = first + mc;
        const uint L = min(C, len - mc * C);
        const uint rec = work_rec(h, c);
        const uint brv = bwd_rec(pc.beta_base, h, c) / 4u;
        // dV' = DVP + KD dS, four rows at a time
        [[dont_unroll]] for (uint j0 = 0; j0 < L; j0 += 4u) {
            vec4 acc[4];
            [[unroll]] for (uint a = 0; a < 4u; a++)
                acc[a] = j0 + a < L ? bwd4_buf[brv + R_DVP + (j0 + a) * V4 + v4] : vec4(0.0);
            [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
                vec4 kd[4], d[4];
                [[unroll]] for (uint a = 0; a < 4u; a++) {
                    kd[a] = j0 + a < L ? work_buf[work_kd(rec) + (j0 + a) * K4 + x4] : vec4(0.0);
                    d[a] = ds_row(4u * x4 + a, lid);
                }
                [[unroll]] for (uint a = 0; a < 4u; a++)
                    acc[a] += kd[a].x * d[0] + kd[a].y * d[1] + kd[a].z * d[2] + kd[a].w * d[3];
            }
            [[unroll]] for (uint a = 0; a < 4u; a++)
                if (j0 + a < L) {
                    bwd4_buf[brv + R_DVP + (j0 + a) * V4 + v4] = acc[a];
                    s_dv[(j0 + a) * VT + lid] = acc[a];
                }
        }
        // dS <- e^(G_last) dS + DSN - W^T dV', and DSN <- dS, four rows at a time
        const float dl = exp(work_buf[work_info(rec) + L - 1u].x);
        [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
            vec4 acc[4];
            [[unroll]] for (uint m = 0; m < 4u; m++) {
                const uint x = 4u * x4 + m;
                const vec4 d = ds_row(x, lid);
                acc[m] = dl * d;
                if (x < K) {
                    const uint di = brv + R_DSN + x * V4 + v4;
                    acc[m] += bwd4_buf[di];
                    bwd4_buf[di] = d;
                }
            }
            [[dont_unroll]] for (uint j0 = 0; j0 < L; j0 += 4u)
                [[unroll]] for (uint a = 0; a < 4u; a++)
                    if (j0 + a < L) {
                        const vec4 w = work_buf[work_w(rec) + (j0 + a) * K4 + x4];
                        const vec4 dv = s_dv[(j0 + a) * VT + lid];
                        [[unroll]] for (uint m = 0; m < 4u; m++)
                            acc[m] -= w[m] * dv;
                    }
            [[unroll]] for (uint m = 0; m < 4u; m++)
                if (4u * x4 + m < K)
                    s_dS[(4u * x4 + m) * VT + lid] = acc[m];
        }
    }

    // the sequence's first chunk: dh0; else carry dS to the next pass
    const bool done = lo == 0u;
    if (!done || HAS_HT)
        [[dont_unroll]] for (uint x = 0; x < K; x++) {
            const vec4 d = s_dS[x * VT + lid];
            const uint e = (hbase + x) * V + 4u * v4;
            for (uint m = 0; m < nv; m++) {
                if (done)
                    ht_buf[pc.ht_base + e + m] = d[m];
                else
                    carry_buf[pc.g_base + e + m] = d[m];
            }
        }
}
