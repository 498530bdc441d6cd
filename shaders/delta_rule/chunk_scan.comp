#version 450
// Delta rule, chunk form, step 2 (sequential over the chunks of a sequence, parallel over
// value heads and value tiles). With S the state entering chunk n (h0 for the first):
//   store S (for the output step);  V' = U - W S  (replaces U in the work record);
//   S <- e^(G_last) S + KD^T V'
// and the last S goes to ht. The state tile lives in registers (and a copy in shared memory
// for W S); W and KD are read as vec4 rows straight from the work record.
// Workgroup: 64 threads as RG row groups x CG = 64/RG column groups; thread (rg, cg) owns
//   V' rows rg*R .. +R-1 (R = C/RG) and state rows rg*4 + 4 RG m + 0..3 (m < RS4),
//   vec4 columns cg*CN .. +CN-1 of the tile of 4 CG CN values.
// SUBGROUP=1 (the host picks it when the subgroup size is CG and the subgroup ops are there):
// the W and KD values a row group needs are the same for all its CG threads, which form one
// subgroup, so each lane loads a different one and the others take it by broadcast. On CPU
// drivers every storage load is a loop over the lanes, whatever the addresses; a broadcast is
// a register move, so this replaces R + 4 RS4 loads per step with 1 + 4 RS4 / CG.
// Grid: x = value tiles, y = value heads, z = sequences.
// P0 = C, P1 = CN, P2 = RS4 = ceil(K / (4 RG)), P3 = RG (8 or 16; 64 / subgroup size with
// SUBGROUP=1, so that R = C / RG <= CG).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint C = P0;
const uint CN = P1;
const uint RS4 = P2;
const uint RG = P3;
const uint CG = 64u / RG;
const uint VT4 = CG * CN;   // vec4 columns per tile
const uint R = C / RG;      // V' rows per thread
const uint KP = 4u * RG * RS4; // state rows, padded
const uint NS = RS4 * 4u;   // state rows per thread

shared vec4 s_S[KP * VT4];  // the state entering the chunk
shared vec4 s_vp[C * VT4];  // V'

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint rg = lid / CG, cg = lid % CG;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    const uint c40 = gl_WorkGroupID.x * VT4 + cg * CN; // first global vec4 column of the thread
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint first = VARLEN ? seqtab[s].z : s * ((pc.T + C - 1u) / C);
    const uint n = (len + C - 1u) / C;
    const uint hbase = (s * pc.HV + h) * K;

    // the initial state, through shared memory (flat loops keep the kernel small)
    const uint v40 = gl_WorkGroupID.x * VT4;
    [[dont_unroll]] for (uint e = lid; e < KP * VT4; e += 64u) {
        const uint i = e / VT4, col = 4u * (v40 + e % VT4);
        vec4 x = vec4(0.0);
        if (HAS_H0 && i < K)
            for (uint m = 0; m < 4u; m++)
                if (col + m < V)
                    x[m] = h0_buf[pc.h0_base + (hbase + i) * V + col + m];
        s_S[e] = x;
    }
    barrier();
    vec4 S[NS][CN];
    for (uint m = 0; m < RS4; m++)
        for (uint a = 0; a < 4u; a++)
            for (uint u = 0; u < CN; u++)
                S[4u * m + a][u] = s_S[(rg * 4u + 4u * RG * m + a) * VT4 + cg * CN + u];

    [[dont_unroll]] for (uint mc = 0; mc < n; mc++) {
        const uint c = first + mc;
        const uint L = min(C, len - mc * C);
        const uint rec = work_rec(h, c);
        const uint st = state_at(h, c);

        // the state entering this chunk (in s_S), for the output step
        [[dont_unroll]] for (uint e = lid; e < K * VT4; e += 64u) {
            const uint c4 = v40 + e % VT4;
            if (c4 < V4)
                state_buf[st + (e / VT4) * V4 + c4] = s_S[e];
        }

        // V' = U - W S
        vec4 acc[R][CN];
        for (uint a = 0; a < R; a++)
            for (uint u = 0; u < CN; u++)
                acc[a][u] = vec4(0.0);
        const uint j0 = rg * R;
        const bool jok = j0 < L;
        [[dont_unroll]] for (uint kg = 0; kg < K4; kg++) {
            vec4 w[R];
#if SUBGROUP
            vec4 wl = vec4(0.0);
            if (cg < R && j0 + cg < L)
                wl = work_buf[work_w(rec) + (j0 + cg) * K4 + kg];
            [[unroll]] for (uint a = 0; a < R; a++)
                w[a] = dr_bcast(wl, a);
#else
            for (uint a = 0; a < R; a++)
                w[a] = (jok && j0 + a < L) ? work_buf[work_w(rec) + (j0 + a) * K4 + kg] : vec4(0.0);
#endif
            for (uint u = 0; u < CN; u++) {
                const vec4 s0 = s_S[(4u * kg) * VT4 + cg * CN + u];
                const vec4 s1 = s_S[(4u * kg + 1u) * VT4 + cg * CN + u];
                const vec4 s2 = s_S[(4u * kg + 2u) * VT4 + cg * CN + u];
                const vec4 s3 = s_S[(4u * kg + 3u) * VT4 + cg * CN + u];
                for (uint a = 0; a < R; a++)
                    acc[a][u] += w[a].x * s0 + w[a].y * s1 + w[a].z * s2 + w[a].w * s3;
            }
        }
        for (uint a = 0; a < R; a++) {
            const uint j = j0 + a;
            for (uint u = 0; u < CN; u++) {
                vec4 vp = vec4(0.0);
                if (j < L && c40 + u < V4) {
                    const uint ui = work_u(rec) + j * V4 + c40 + u;
                    vp = work_buf[ui] - acc[a][u];
                    work_buf[ui] = vp;
                }
                s_vp[j * VT4 + cg * CN + u] = vp;
            }
        }
        const float dl = exp(work_buf[work_info(rec) + L - 1u].x);
        for (uint r = 0; r < NS; r++)
            for (uint u = 0; u < CN; u++)
                S[r][u] *= dl;
        barrier();

        // S += KD^T V', four chunk rows at a time
        [[dont_unroll]] for (uint j = 0; j < L; j += 4u) {
            vec4 p[4][CN];
            for (uint e = 0; e < 4u; e++)
                for (uint u = 0; u < CN; u++)
                    p[e][u] = s_vp[(j + e) * VT4 + cg * CN + u];
#if SUBGROUP
            // lane cg loads value cg + CG t of the 4 RS4 (row m, token e) pairs, v = 4 m + e
            vec4 kdl[(4u * RS4 + CG - 1u) / CG];
            [[unroll]] for (uint t = 0; t < (4u * RS4 + CG - 1u) / CG; t++) {
                const uint v = cg + CG * t, k4 = rg + RG * (v / 4u), e = v % 4u;
                kdl[t] = vec4(0.0);
                if (v < 4u * RS4 && k4 < K4 && j + e < L)
                    kdl[t] = work_buf[work_kd(rec) + (j + e) * K4 + k4];
            }
#endif
            [[unroll]] for (uint m = 0; m < RS4; m++) {
                const uint k4 = rg + RG * m;
                vec4 kd[4];
#if SUBGROUP
                [[unroll]] for (uint e = 0; e < 4u; e++)
                    kd[e] = dr_bcast(kdl[(4u * m + e) / CG], (4u * m + e) % CG);
#else
                for (uint e = 0; e < 4u; e++)
                    kd[e] = (k4 < K4 && j + e < L) ? work_buf[work_kd(rec) + (j + e) * K4 + k4] : vec4(0.0);
#endif
                for (uint a = 0; a < 4u; a++)
                    for (uint u = 0; u < CN; u++)
                        S[4u * m + a][u] += kd[0][a] * p[0][u] + kd[1][a] * p[1][u] +
                                            kd[2][a] * p[2][u] + kd[3][a] * p[3][u];
            }
        }
        for (uint m = 0; m < RS4; m++)
            for (uint a = 0; a < 4u; a++)
                for (uint u = 0; u < CN; u++)
                    s_S[(rg * 4u + 4u * RG * m + a) * VT4 + cg * CN + u] = S[4u * m + a][u];
        barrier();
    }

    // the final state is in s_S
    if (HAS_HT)
        [[dont_unroll]] for (uint e = lid; e < K * VT4; e += 64u) {
            const uint i = e / VT4, col = 4u * (v40 + e % VT4);
            const vec4 x = s_S[e];
            for (uint m = 0; m < 4u; m++)
                if (col + m < V)
                    ht_buf[pc.ht_base + (hbase + i) * V + col + m] = x[m];
        }
}
