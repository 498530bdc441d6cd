#version 450
// Delta rule backward, step 4 (sequential over the chunks of a sequence, last to first;
// parallel over value heads and value columns): the state gradient. With dS the gradient of
// the state leaving chunk n (dht, or zero, for the last chunk):
//   DSN_n holds scale (Q e^G)^T dO (bwd_local); it is replaced by dS (for bwd_grad)
//   dV' = DVP + KD dS               (replaces DVP)
//   dS <- e^(G_last) dS + scale (Q e^G)^T dO - W^T dV'
// and the last dS is dh0. Each thread owns one value column: its column of dS and of dV'
// live in shared memory and no other thread touches them, so the loop needs no barriers.
// Pass p (BWD_STEP) handles at most NPER chunks of each sequence, counting from its end, and
// leaves dS in carry_buf for the next pass: CPU drivers may stop an invocation after a fixed
// number of loop iterations, so no invocation walks a whole long sequence.
// Grid: x = value tiles of VT, y = value heads, z = sequences. P0 = C, P1 = VT (threads),
// P2 = NPER.
#extension GL_GOOGLE_include_directive : require
#define DR_BACKWARD 1
#include "common.glsl"
#include "bwd_layout.glsl"

const uint C = P0;
const uint VT = P1;
const uint NPER = P2;
shared vec4 s_dS[K4 * VT]; // rows 4 x4 .. 4 x4 + 3 of the thread's column
shared float s_dv[C * VT];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint v = gl_WorkGroupID.x * VT + lid;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint first = VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C);
    const uint n = (len + C - 1u) / C;
    const uint skip = BWD_STEP * NPER; // chunks done by the earlier passes
    if (v >= V || (skip >= n && skip > 0u))
        return;
    const uint hi = n - skip, lo = hi > NPER ? hi - NPER : 0u;
    const uint hbase = (s * pc.HV + h) * K;
    const uint V4F = 4u * BR_V4;

    [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
        vec4 d = vec4(0.0);
        [[unroll]] for (uint m = 0; m < 4u; m++) {
            const uint x = 4u * x4 + m;
            if (x < K)
                d[m] = skip > 0u ? carry_buf[pc.g_base + (hbase + x) * V + v]
                                 : (HAS_H0 ? h0_buf[pc.h0_base + (hbase + x) * V + v] : 0.0);
        }
        s_dS[x4 * VT + lid] = d;
    }

    [[dont_unroll]] for (uint mc = hi; mc-- > lo;) {
        const uint c = first + mc;
        const uint L = min(C, len - mc * C);
        const uint rec = work_rec(h, c);
        const uint br = bwd_rec(pc.beta_base, h, c);
        // dV' = DVP + KD dS, four rows at a time
        [[dont_unroll]] for (uint j0 = 0; j0 < L; j0 += 4u) {
            vec4 acc = vec4(0.0);
            [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
                const vec4 d = s_dS[x4 * VT + lid];
                [[unroll]] for (uint m = 0; m < 4u; m++)
                    if (j0 + m < L)
                        acc[m] += dot(work_buf[work_kd(rec) + (j0 + m) * K4 + x4], d);
            }
            [[unroll]] for (uint m = 0; m < 4u; m++) {
                const uint j = j0 + m;
                if (j < L) {
                    const uint di = br + 4u * R_DVP + j * V4F + v;
                    const float dv = bwd_buf[di] + acc[m];
                    bwd_buf[di] = dv;
                    s_dv[j * VT + lid] = dv;
                }
            }
        }
        // dS <- e^(G_last) dS + DSN - W^T dV', and DSN <- dS
        const float dl = exp(work_buf[work_info(rec) + L - 1u].x);
        [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
            const vec4 d = s_dS[x4 * VT + lid];
            vec4 acc = dl * d;
            [[unroll]] for (uint m = 0; m < 4u; m++) {
                const uint x = 4u * x4 + m;
                if (x < K) {
                    const uint di = br + 4u * R_DSN + x * V4F + v;
                    acc[m] += bwd_buf[di];
                    bwd_buf[di] = d[m];
                }
            }
            [[dont_unroll]] for (uint j0 = 0; j0 < L; j0 += 4u)
                [[unroll]] for (uint m = 0; m < 4u; m++)
                    if (j0 + m < L)
                        acc -= work_buf[work_w(rec) + (j0 + m) * K4 + x4] * s_dv[(j0 + m) * VT + lid];
            s_dS[x4 * VT + lid] = acc;
        }
    }

    // the sequence's first chunk: dh0; else carry dS to the next pass
    const bool done = lo == 0u;
    if (!done || HAS_HT)
        [[dont_unroll]] for (uint x4 = 0; x4 < K4; x4++) {
            const vec4 d = s_dS[x4 * VT + lid];
            [[unroll]] for (uint m = 0; m < 4u; m++) {
                const uint x = 4u * x4 + m;
                if (x >= K)
                    continue;
                if (done)
                    ht_buf[pc.ht_base + (hbase + x) * V + v] = d[m];
                else
                    carry_buf[pc.g_base + (hbase + x) * V + v] = d[m];
            }
        }
}
