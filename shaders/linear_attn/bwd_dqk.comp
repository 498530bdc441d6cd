#version 450
// Causal linear attention, backward, step 5 (parallel over all chunks and key tiles): dq, dk
// and the log-decay gradient of KQ = 32 key channels of one chunk. Per channel i, token t:
//   dq_t = scale * ( e^G_t (S_in do'_t) + sum_{s<=t} e^(G_t - G_s) k_s P[t][s] )
//   dk_t = e^(G_C - G_t) (D v_t) + scale * sum_{s>=t} e^(G_s - G_t) q_s P[s][t]
//   dG_t = q_t dq_t - k_t dk_t  (+ sum_j D[i][j] S_out[i][j] at the chunk's last token C)
// with S_in / S_out the states entering / leaving the chunk and D the gradient of S_out.
// dgk is the reverse cumulative sum of dG inside the chunk; for dg and dg_gamma the sums over
// the tile's channels go to scratch (bwd_dg adds the tiles up).
//
// Workgroup of C threads = (C/4) x 4; thread (ti, tj) owns the register block tokens
// 4ti..4ti+3 x channels 8tj..8tj+7, for dq and dk. Every operand is staged in shared memory
// so that each step of every sum is one vec4 read along tokens (do', v, P^T, P) and two along
// channels (S_in, D, k, q) for 8 vec4 FMAs. P goes through shared memory in half-chunk
// pieces. A scalar decay is already folded into P (steps 1 and 2 store P e^(G_t - G_s)); a
// per-channel decay (gk) is applied per element, its exponent selected only where s <= t.
// Grid: x = key tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#define GC_CHANNELS KQ
#include "bwd_common.glsl"

const uint NB = C / 4u;
const uint NT = NB * 4u;
const uint XT = 16u;     // state columns per inter-chunk tile
const uint HC = C / 2u;  // rows of P per piece

// area A, used in turn: the inter-chunk tiles, then pieces of P^T and of P, then dG [x][t]
const uint I_DO = 0u;                    // do'^T [XT][C]
const uint I_V = XT * C / 4u;            // v^T [XT][C]
const uint I_S = 2u * XT * C / 4u;       // S_in^T [XT][KQ]
const uint I_D = I_S + XT * KQ / 4u;     // D^T [XT][KQ]
const uint I_O = I_D + XT * KQ / 4u;     // S_out^T [XT][KQ]
const uint INTER4 = I_O + XT * KQ / 4u;
const uint AREA4 = INTER4 > KQ * C / 4u ? INTER4 : KQ * C / 4u;
shared vec4 s_a4[AREA4 > HC * C / 4u ? AREA4 : HC * C / 4u];
// area B: k, then q, [s][x]
shared vec4 s_b4[C * KQ / 4u];
shared float s_last[KQ];

void put_a(uint e, float x) { s_a4[e >> 2u][e & 3u] = x; }
void put_b(uint e, float x) { s_b4[e >> 2u][e & 3u] = x; }
float get_a(uint e) { return s_a4[e >> 2u][e & 3u]; }

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 4u, tj = lid % 4u;
    const uint x0 = gl_WorkGroupID.x * KQ;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    chunk_channel_decay(lid, b, tb, h, L, x0);
    const uvec4 rows = uvec4(4u * ti) + uvec4(0u, 1u, 2u, 3u);
    for (uint e = lid; e < C * KQ; e += NT) {
        const uint sc = e / KQ, xx = e % KQ;
        put_b(e, (sc < L && x0 + xx < K) ? load_k(b, tb + sc, h, x0 + xx) : 0.0);
    }

    // inter-chunk terms: S_in do'_t and D v_t, over tiles of XT state columns
    const bool last = local0 + C >= len;
    const uint sb = chunk_row(pc.r_state, h, c, K * VP), db = chunk_row(pc.r_dst, h, c, K * VP);
    const uint ob = last ? 0u : chunk_row(pc.r_state, h, c + 1u, K * VP);
    vec4 XQ[8], XK[8];   // [y][a]: token 4ti+a, channel 8tj+y
    [[unroll]] for (uint y = 0; y < 8u; y++) { XQ[y] = vec4(0.0); XK[y] = vec4(0.0); }
    vec4 ld0 = vec4(0.0), ld1 = vec4(0.0);
    for (uint j0 = 0; j0 < VP; j0 += XT) {
        barrier();
        for (uint e = lid; e < XT * C; e += NT) {
            const uint jj = e / C, t = e % C, col = j0 + jj;
            const bool ok = t < L && col < VP;
            put_a(I_DO * 4u + e, ok ? load_dop(b, tb + t, h, col, c, t) : 0.0);
            put_a(I_V * 4u + e, ok ? load_v(b, tb + t, h, col) : 0.0);
        }
        for (uint e = lid; e < XT * KQ; e += NT) {
            const uint jj = e / KQ, xx = e % KQ, ii = x0 + xx, col = j0 + jj;
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
            const uint cb = (jj * KQ) / 4u + 2u * tj;
            const vec4 s0 = s_a4[I_S + cb], s1 = s_a4[I_S + cb + 1u];
            const vec4 e0 = s_a4[I_D + cb], e1 = s_a4[I_D + cb + 1u];
            [[unroll]] for (uint y = 0; y < 4u; y++) {
                XQ[y] += d4 * s0[y];
                XQ[y + 4u] += d4 * s1[y];
                XK[y] += v4 * e0[y];
                XK[y + 4u] += v4 * e1[y];
            }
            if (WANT_GATES && ti == 0u) {
                ld0 += e0 * s_a4[I_O + cb];
                ld1 += e1 * s_a4[I_O + cb + 1u];
            }
        }
    }
    if (WANT_GATES && ti == 0u)
        [[unroll]] for (uint y = 0; y < 4u; y++) {
            s_last[8u * tj + y] = ld0[y];
            s_last[8u * tj + 4u + y] = ld1[y];
        }

    // G of this block's tokens per channel (the scalar part alone without gk)
    vec4 gt[8];
    float gl[8];
    [[unroll]] for (uint y = 0; y < 8u; y++) {
        const uint gb = (8u * tj + y) * C;
        gt[y] = vec4(s_gc[gb + rows.x], s_gc[gb + rows.y], s_gc[gb + rows.z], s_gc[gb + rows.w]);
        gl[y] = s_gc[gb + L - 1u];
    }
    const uint pb = chunk_row(pc.r_pmat, h, c, C * C);
    // the in-chunk sums accumulate onto the decayed inter-chunk terms (fewer live registers):
    // XQ becomes dq / scale, XK becomes dk
    [[unroll]] for (uint y = 0; y < 8u; y++) {
        XQ[y] *= exp(gt[y]);
        XK[y] *= exp(gl[y] - gt[y]);
    }

    // in-chunk dq: sum_{s<=t} P[t][s] k_s, from pieces of P^T [s][t]
    const uint smax = min(4u * ti + 4u, L);
    for (uint s0 = 0; s0 < L; s0 += HC) {
        barrier();
        for (uint e = lid; e < HC * C; e += NT) {
            const uint sc = s0 + e / C, t = e % C;
            put_a(e, scr[pb + t * C + sc]);
        }
        barrier();
        for (uint sc = s0; sc < min(s0 + HC, smax); sc++) {
            const vec4 p4 = s_a4[((sc - s0) * C) / 4u + ti];
            const vec4 k0 = s_b4[(sc * KQ) / 4u + 2u * tj], k1 = s_b4[(sc * KQ) / 4u + 2u * tj + 1u];
            if (HAS_GK) {
                const bvec4 m = greaterThanEqual(rows, uvec4(sc));
                [[unroll]] for (uint y = 0; y < 4u; y++) {
                    XQ[y] += p4 * k0[y] * exp(mix(vec4(0.0), gt[y] - s_gc[(8u * tj + y) * C + sc], m));
                    XQ[y + 4u] += p4 * k1[y] *
                                  exp(mix(vec4(0.0), gt[y + 4u] - s_gc[(8u * tj + 4u + y) * C + sc], m));
                }
            } else {
                [[unroll]] for (uint y = 0; y < 4u; y++) {
                    XQ[y] += p4 * k0[y];
                    XQ[y + 4u] += p4 * k1[y];
                }
            }
        }
    }

    // in-chunk dk: sum_{s>=t} P[s][t] q_s, from pieces of P [s][t]
    barrier();
    for (uint e = lid; e < C * KQ; e += NT) {
        const uint sc = e / KQ, xx = e % KQ;
        put_b(e, (sc < L && x0 + xx < K) ? load_q(b, tb + sc, h, x0 + xx) : 0.0);
    }
    for (uint s0 = 0; s0 < L; s0 += HC) {
        barrier();
        for (uint e = lid; e < HC * C; e += NT) {
            const uint sc = s0 + e / C, t = e % C;
            put_a(e, scr[pb + sc * C + t]);
        }
        barrier();
        for (uint sc = max(s0, 4u * ti); sc < min(s0 + HC, L); sc++) {
            const vec4 p4 = pc.scale * s_a4[((sc - s0) * C) / 4u + ti];
            const vec4 q0 = s_b4[(sc * KQ) / 4u + 2u * tj], q1 = s_b4[(sc * KQ) / 4u + 2u * tj + 1u];
            if (HAS_GK) {
                const bvec4 m = lessThanEqual(rows, uvec4(sc));
                [[unroll]] for (uint y = 0; y < 4u; y++) {
                    XK[y] += p4 * q0[y] * exp(mix(vec4(0.0), s_gc[(8u * tj + y) * C + sc] - gt[y], m));
                    XK[y + 4u] += p4 * q1[y] *
                                  exp(mix(vec4(0.0), s_gc[(8u * tj + 4u + y) * C + sc] - gt[y + 4u], m));
                }
            } else {
                [[unroll]] for (uint y = 0; y < 4u; y++) {
                    XK[y] += p4 * q0[y];
                    XK[y + 4u] += p4 * q1[y];
                }
            }
        }
    }

    vec4 dg[8];
    [[unroll]] for (uint y = 0; y < 8u; y++) {
        const uint xx = 8u * tj + y, i = x0 + xx;
        const vec4 dq = pc.scale * XQ[y];
        const vec4 dk = XK[y];
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
                const float qv = s_b4[(t * KQ + xx) >> 2u][(t * KQ + xx) & 3u];
                dg[y][a] = qv * dq[a] - load_k(b, tb + t, h, i) * dk[a] +
                           (t == L - 1u ? s_last[xx] : 0.0);
            }
        }
    }
    if (!WANT_GATES)
        return;

    // dG [x][t] in area A: dgk (reverse cumulative sums) and the per-tile sums for dg
    barrier();
    [[unroll]] for (uint y = 0; y < 8u; y++)
        [[unroll]] for (uint a = 0; a < 4u; a++)
            put_a((8u * tj + y) * C + rows[a], dg[y][a]);
    barrier();
    if (WANT_DGK)
        for (uint xx = lid; xx < KQ; xx += NT) {
            if (x0 + xx >= K)
                continue;
            float run = 0.0;
            for (uint t = L; t-- > 0u;) {
                run += get_a(xx * C + t);
                outa[pc.outa_base + ((b * pc.T + tb + t) * H + h) * K + x0 + xx] = run;
            }
        }
    if (WANT_DG || WANT_DGAMMA) {
        const uint t = lid;
        float sum = 0.0;
        for (uint xx = 0; xx < KQ; xx++)
            sum += get_a(xx * C + t);
        scr[chunk_row(pc.r_dgp, h, c, NKQ * C) + gl_WorkGroupID.x * C + t] = sum;
    }
}
