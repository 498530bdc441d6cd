#version 450
// Causal linear attention, backward, step 5 (parallel over all chunks and key tiles): dq, dk
// and the log-decay gradient of KT key channels of one chunk. Per channel i, token t:
//   dq_t = scale * ( e^G_t (S_in do'_t) + sum_{s<=t} e^(G_t - G_s) k_s P[t][s] )
//   dk_t = e^(G_C - G_t) (D v_t) + scale * sum_{s>=t} e^(G_s - G_t) q_s P[s][t]
//   dG_t = q_t dq_t - k_t dk_t  (+ sum_j D[i][j] S_out[i][j] at the chunk's last token C)
// with S_in / S_out the states entering / leaving the chunk and D the gradient of S_out.
// dgk is the reverse cumulative sum of dG inside the chunk; for dg and dg_gamma the sums over
// the tile's channels go to scratch (bwd_dg adds the tiles up).
//
// Workgroup of C threads = (C/4) x 4; thread (ti, tj) owns the register block tokens
// 4ti..4ti+3 x channels 4tj..4tj+3, for dq and dk. Every operand is staged in shared memory
// so that each step of every sum is two vec4 reads for 16 FMAs: one along tokens (do', v,
// P^T, P), one along channels (S_in, D, k, q). A scalar decay is folded into P once; a
// per-channel decay (gk) is applied per element, its exponent selected only where s <= t.
// Grid: x = key tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bwd_common.glsl"

const uint NB = C / 4u;
const uint NT = NB * 4u;
const uint XT = 16u;   // state columns per inter-chunk tile

// area A, used in turn: the inter-chunk tiles, then P^T, then P, then dG [x][t]
const uint I_DO = 0u;                    // do'^T [XT][C]
const uint I_V = XT * C / 4u;            // v^T [XT][C]
const uint I_S = 2u * XT * C / 4u;       // S_in^T [XT][KT]
const uint I_D = I_S + XT * KT / 4u;     // D^T [XT][KT]
const uint I_O = I_D + XT * KT / 4u;     // S_out^T [XT][KT]
const uint INTER4 = I_O + XT * KT / 4u;
shared vec4 s_a4[INTER4 > C * C / 4u ? INTER4 : C * C / 4u];
// area B: k, then q, [s][x]
shared vec4 s_b4[C * KT / 4u];
shared float s_last[KT];

void put_a(uint e, float x) { s_a4[e >> 2u][e & 3u] = x; }
void put_b(uint e, float x) { s_b4[e >> 2u][e & 3u] = x; }

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 4u, tj = lid % 4u;
    const uint x0 = gl_WorkGroupID.x * KT;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    chunk_channel_decay(lid, b, tb, h, L, x0);
    const uvec4 rows = uvec4(4u * ti) + uvec4(0u, 1u, 2u, 3u);
    for (uint e = lid; e < C * KT; e += NT) {
        const uint sc = e / KT, xx = e % KT;
        put_b(e, (sc < L && x0 + xx < K) ? load_k(b, tb + sc, h, x0 + xx) : 0.0);
    }

    // inter-chunk terms: S_in do'_t and D v_t, over tiles of XT state columns
    const bool last = local0 + C >= len;
    const uint sb = chunk_row(pc.r_state, h, c, K * VP), db = chunk_row(pc.r_dst, h, c, K * VP);
    const uint ob = last ? 0u : chunk_row(pc.r_state, h, c + 1u, K * VP);
    vec4 XQ[4], XK[4];   // [y][a]: token 4ti+a, channel 4tj+y
    [[unroll]] for (uint y = 0; y < 4u; y++) { XQ[y] = vec4(0.0); XK[y] = vec4(0.0); }
    vec4 ld = vec4(0.0);
    for (uint j0 = 0; j0 < VP; j0 += XT) {
        barrier();
        for (uint e = lid; e < XT * C; e += NT) {
            const uint jj = e / C, t = e % C, col = j0 + jj;
            const bool ok = t < L && col < VP;
            put_a(I_DO * 4u + e, ok ? load_dop(b, tb + t, h, col, c, t) : 0.0);
            put_a(I_V * 4u + e, ok ? load_v(b, tb + t, h, col) : 0.0);
        }
        for (uint e = lid; e < XT * KT; e += NT) {
            const uint jj = e / KT, xx = e % KT, ii = x0 + xx, col = j0 + jj;
            const bool ok = ii < K && col < VP;
            put_a(I_S * 4u + e, ok ? scr[sb + ii * VP + col] : 0.0);
            put_a(I_D * 4u + e, ok ? scr[db + ii * VP + col] : 0.0);
            if (WANT_GATES) {
                float so = 0.0;
                if (ok && !last)
                    so = scr[ob + ii * VP + col];
                else if (ok && col < V)
                    so = scr[pc.scr_base + pc.r_fin + ((s * H + h) * K + ii) * V + col];
                else if (ok)
                    so = scr[pc.scr_base + pc.r_finz + (s * H + h) * K + ii];
                put_a(I_O * 4u + e, so);
            }
        }
        barrier();
        for (uint jj = 0; jj < XT; jj++) {
            const vec4 d4 = s_a4[I_DO + (jj * C) / 4u + ti];
            const vec4 v4 = s_a4[I_V + (jj * C) / 4u + ti];
            const vec4 s4 = s_a4[I_S + (jj * KT) / 4u + tj];
            const vec4 dd4 = s_a4[I_D + (jj * KT) / 4u + tj];
            [[unroll]] for (uint y = 0; y < 4u; y++) {
                XQ[y] += d4 * s4[y];
                XK[y] += v4 * dd4[y];
            }
            if (WANT_GATES && ti == 0u)
                ld += dd4 * s_a4[I_O + (jj * KT) / 4u + tj];
        }
    }
    if (WANT_GATES && ti == 0u)
        [[unroll]] for (uint y = 0; y < 4u; y++)
            s_last[4u * tj + y] = ld[y];

    // G of this block's tokens per channel (the scalar part alone without gk)
    vec4 gt[4];
    float gl[4];
    [[unroll]] for (uint y = 0; y < 4u; y++) {
        const uint gb = (4u * tj + y) * C;
        gt[y] = vec4(s_gc[gb + rows.x], s_gc[gb + rows.y], s_gc[gb + rows.z], s_gc[gb + rows.w]);
        gl[y] = s_gc[gb + L - 1u];
    }
    const uint pb = chunk_row(pc.r_pmat, h, c, C * C);

    // in-chunk dq: sum_{s<=t} P[t][s] k_s, from P^T [s][t]
    barrier();
    for (uint e = lid; e < C * C; e += NT) {
        const uint sc = e / C, t = e % C;
        float p = scr[pb + t * C + sc];
        if (!HAS_GK && sc <= t)
            p *= exp(s_gs[t] - s_gs[sc]);
        put_a(e, p);
    }
    barrier();
    vec4 DQ[4];
    [[unroll]] for (uint y = 0; y < 4u; y++) DQ[y] = vec4(0.0);
    const uint smax = min(4u * ti + 4u, L);
    for (uint sc = 0; sc < smax; sc++) {
        const vec4 p4 = s_a4[(sc * C) / 4u + ti];
        const vec4 k4 = s_b4[(sc * KT) / 4u + tj];
        if (HAS_GK) {
            const bvec4 m = greaterThanEqual(rows, uvec4(sc));
            [[unroll]] for (uint y = 0; y < 4u; y++)
                DQ[y] += p4 * k4[y] * exp(mix(vec4(0.0), gt[y] - s_gc[(4u * tj + y) * C + sc], m));
        } else {
            [[unroll]] for (uint y = 0; y < 4u; y++)
                DQ[y] += p4 * k4[y];
        }
    }

    // in-chunk dk: sum_{s>=t} P[s][t] q_s, from P [s][t]
    barrier();
    for (uint e = lid; e < C * C; e += NT) {
        const uint sc = e / C, t = e % C;
        float p = scr[pb + e];
        if (!HAS_GK && t <= sc)
            p *= exp(s_gs[sc] - s_gs[t]);
        put_a(e, p);
    }
    for (uint e = lid; e < C * KT; e += NT) {
        const uint sc = e / KT, xx = e % KT;
        put_b(e, (sc < L && x0 + xx < K) ? load_q(b, tb + sc, h, x0 + xx) : 0.0);
    }
    barrier();
    vec4 DK[4];
    [[unroll]] for (uint y = 0; y < 4u; y++) DK[y] = vec4(0.0);
    for (uint sc = 4u * ti; sc < L; sc++) {
        const vec4 p4 = s_a4[(sc * C) / 4u + ti];
        const vec4 q4 = s_b4[(sc * KT) / 4u + tj];
        if (HAS_GK) {
            const bvec4 m = lessThanEqual(rows, uvec4(sc));
            [[unroll]] for (uint y = 0; y < 4u; y++)
                DK[y] += p4 * q4[y] * exp(mix(vec4(0.0), s_gc[(4u * tj + y) * C + sc] - gt[y], m));
        } else {
            [[unroll]] for (uint y = 0; y < 4u; y++)
                DK[y] += p4 * q4[y];
        }
    }

    vec4 dg[4];
    [[unroll]] for (uint y = 0; y < 4u; y++) {
        const uint xx = 4u * tj + y, i = x0 + xx;
        const vec4 dq = pc.scale * (exp(gt[y]) * XQ[y] + DQ[y]);
        const vec4 dk = exp(gl[y] - gt[y]) * XK[y] + pc.scale * DK[y];
        dg[y] = vec4(0.0);
        [[unroll]] for (uint a = 0; a < 4u; a++) {
            const uint t = rows[a];
            if (t >= L || i >= K)
                continue;
            if (WANT_DQ)
                store_dq(b, tb + t, h, i, dq[a]);
            if (WANT_DK)
                store_dk(b, tb + t, h, i, dk[a]);
            if (WANT_GATES) {
                const float qv = s_b4[(t * KT + xx) >> 2u][(t * KT + xx) & 3u];
                dg[y][a] = qv * dq[a] - load_k(b, tb + t, h, i) * dk[a] +
                           (t == L - 1u ? s_last[xx] : 0.0);
            }
        }
    }
    if (!WANT_GATES)
        return;

    // dG [x][t] in area A: dgk (reverse cumulative sums) and the per-tile sums for dg
    barrier();
    [[unroll]] for (uint y = 0; y < 4u; y++)
        [[unroll]] for (uint a = 0; a < 4u; a++)
            put_a((4u * tj + y) * C + rows[a], dg[y][a]);
    barrier();
    if (WANT_DGK && lid < KT && x0 + lid < K) {
        float run = 0.0;
        for (uint t = L; t-- > 0u;) {
            run += s_a4[(lid * C + t) >> 2u][(lid * C + t) & 3u];
            outa[pc.outa_base + ((b * pc.T + tb + t) * H + h) * K + x0 + lid] = run;
        }
    }
    if (WANT_DG || WANT_DGAMMA) {
        const uint t = lid;
        float sum = 0.0;
        for (uint xx = 0; xx < KT; xx++)
            sum += s_a4[(xx * C + t) >> 2u][(xx * C + t) & 3u];
        scr[chunk_row(pc.r_dgp, h, c, NKT * C) + gl_WorkGroupID.x * C + t] = sum;
    }
}
