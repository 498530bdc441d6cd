#version 450
// Causal linear attention, backward, step 5 (parallel over all chunks and key tiles): dq, dk
// and the log-decay gradient of KT key channels of one chunk. Per channel i, token t:
//   dq_t = scale * ( e^G_t (S_in do'_t) + sum_{s<=t} e^(G_t - G_s) k_s P[t][s] )
//   dk_t = e^(G_C - G_t) (D v_t) + scale * sum_{s>=t} e^(G_s - G_t) q_s P[s][t]
//   dG_t = q_t dq_t - k_t dk_t  (+ sum_j D[i][j] S_out[i][j] at the chunk's last token C)
// with S_in / S_out the states entering / leaving the chunk and D the gradient of S_out.
// dgk is the reverse cumulative sum of dG inside the chunk; for dg and dg_gamma the sums over
// the tile's channels go to scratch (bwd_dg adds the tiles up).
// Workgroup of 128 threads: thread (x, tg) owns channel x0 + x (x = lid % 16) and the tokens
// tg, tg + 8, ... (tg = lid / 16). Grid: x = key tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#include "bwd_common.glsl"

const uint NT = 128u;
const uint R = C / 8u;         // tokens per thread
const uint XP = KT + 1u;       // padded row of a 16-wide tile
const uint CP = C + 1u;        // padded row of P

shared float s_q[KT * C], s_k[KT * C];     // [x][t]
shared float s_last[KT];
// One area, used in turn (shared memory stays under 32 KiB for C = 64):
//   inter-chunk phase: S_in, D, S_out tiles [x][j] and do', v tiles [t][j];
//   in-chunk phase:    P[t][s], decayed when the decay is scalar;
//   last:              dG [x][t].
const uint O_ST = 0u, O_DD = KT * XP, O_SO = 2u * KT * XP, O_DOP = 3u * KT * XP;
const uint O_V = O_DOP + C * XP, INTER_SIZE = O_V + C * XP;
shared float s_big[INTER_SIZE > C * CP ? INTER_SIZE : C * CP];

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint x = lid % KT, tg = lid / KT;
    const uint x0 = gl_WorkGroupID.x * KT, i = x0 + x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    chunk_channel_decay(lid, b, tb, h, L, x0);
    for (uint e = lid; e < KT * C; e += NT) {
        const uint xx = e / C, t = e % C;
        const bool ok = t < L && x0 + xx < K;
        s_q[e] = ok ? load_q(b, tb + t, h, x0 + xx) : 0.0;
        s_k[e] = ok ? load_k(b, tb + t, h, x0 + xx) : 0.0;
    }

    // inter-chunk terms: S_in do'_t and D v_t, over tiles of KT state columns
    const bool last = local0 + C >= len;
    const uint sb = chunk_row(pc.r_state, h, c, K * VP), db = chunk_row(pc.r_dst, h, c, K * VP);
    const uint ob = last ? 0u : chunk_row(pc.r_state, h, c + 1u, K * VP);
    float xq[R], xk[R];
    for (uint r = 0; r < R; r++) { xq[r] = 0.0; xk[r] = 0.0; }
    float lastdot = 0.0;
    for (uint j0 = 0; j0 < VP; j0 += KT) {
        barrier();
        for (uint e = lid; e < KT * KT; e += NT) {
            const uint xx = e / KT, jj = e % KT, ii = x0 + xx, col = j0 + jj;
            const bool ok = ii < K && col < VP;
            s_big[O_ST + xx * XP + jj] = ok ? scr[sb + ii * VP + col] : 0.0;
            s_big[O_DD + xx * XP + jj] = ok ? scr[db + ii * VP + col] : 0.0;
            if (WANT_GATES) {
                float so = 0.0;
                if (ok && !last)
                    so = scr[ob + ii * VP + col];
                else if (ok && col < V)
                    so = scr[pc.scr_base + pc.r_fin + ((s * H + h) * K + ii) * V + col];
                else if (ok)
                    so = scr[pc.scr_base + pc.r_finz + (s * H + h) * K + ii];
                s_big[O_SO + xx * XP + jj] = so;
            }
        }
        for (uint e = lid; e < C * KT; e += NT) {
            const uint t = e / KT, jj = e % KT, col = j0 + jj;
            const bool ok = t < L && col < VP;
            s_big[O_DOP + t * XP + jj] = ok ? load_dop(b, tb + t, h, col, c, t) : 0.0;
            s_big[O_V + t * XP + jj] = ok ? load_v(b, tb + t, h, col) : 0.0;
        }
        barrier();
        for (uint jj = 0; jj < KT; jj++) {
            const float sij = s_big[O_ST + x * XP + jj], dij = s_big[O_DD + x * XP + jj];
            for (uint r = 0; r < R; r++) {
                const uint t = tg + 8u * r;
                xq[r] += sij * s_big[O_DOP + t * XP + jj];
                xk[r] += dij * s_big[O_V + t * XP + jj];
            }
            if (WANT_GATES && tg == 0u)
                lastdot += dij * s_big[O_SO + x * XP + jj];
        }
    }
    if (tg == 0u)
        s_last[x] = lastdot;

    // in-chunk terms
    barrier();
    const uint pb = chunk_row(pc.r_pmat, h, c, C * C);
    for (uint e = lid; e < C * C; e += NT) {
        const uint t = e / C, sc = e % C;
        float p = scr[pb + e];
        if (!HAS_GK && sc <= t)
            p *= exp(s_gs[t] - s_gs[sc]);
        s_big[t * CP + sc] = p;
    }
    barrier();
    const float gl = s_gc[x * C + L - 1u];
    float dgs[R];
    for (uint r = 0; r < R; r++) {
        const uint t = tg + 8u * r;
        float dg = 0.0;
        if (t < L) {
            const float gt = s_gc[x * C + t];
            float aq = 0.0, ak = 0.0;
            for (uint sc = 0; sc <= t; sc++) {
                const float w = HAS_GK ? exp(gt - s_gc[x * C + sc]) : 1.0;
                aq += w * s_k[x * C + sc] * s_big[t * CP + sc];
            }
            for (uint sc = t; sc < L; sc++) {
                const float w = HAS_GK ? exp(s_gc[x * C + sc] - gt) : 1.0;
                ak += w * s_q[x * C + sc] * s_big[sc * CP + t];
            }
            const float dq = pc.scale * (exp(gt) * xq[r] + aq);
            const float dk = exp(gl - gt) * xk[r] + pc.scale * ak;
            if (i < K) {
                if (WANT_DQ)
                    store_dq(b, tb + t, h, i, dq);
                if (WANT_DK)
                    store_dk(b, tb + t, h, i, dk);
            }
            dg = s_q[x * C + t] * dq - s_k[x * C + t] * dk;
            if (t == L - 1u)
                dg += s_last[x];
        }
        dgs[r] = dg;
    }
    if (!WANT_GATES)
        return;
    barrier();
    for (uint r = 0; r < R; r++)
        s_big[x * C + tg + 8u * r] = dgs[r];
    barrier();
    if (WANT_DGK && lid < KT && x0 + lid < K) {
        float run = 0.0;
        for (uint t = L; t-- > 0u;) {
            run += s_big[lid * C + t];
            outa[pc.outa_base + ((b * pc.T + tb + t) * H + h) * K + x0 + lid] = run;
        }
    }
    if ((WANT_DG || WANT_DGAMMA) && lid < C) {
        float sum = 0.0;
        for (uint xx = 0; xx < KT; xx++)
            sum += s_big[xx * C + lid];
        scr[chunk_row(pc.r_dgp, h, c, NKT * C) + gl_WorkGroupID.x * C + lid] = sum;
    }
}
