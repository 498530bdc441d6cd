#version 450
// LION, attention form: o_i = sum_j A_ij v_j with A_ij = scale (q_i . k_j) M_ij over the whole
// sequence, computed tile by tile (never materialized): a workgroup owns a tile of 64 queries
// and a tile of 64 value columns, and walks over the key tiles of its sequence outwards from its
// own tile (the diagonal tile, then leftwards, then rightwards), accumulating on chip.
//
// Mask, with E/P/X the exclusive prefix / inclusive prefix / exclusive suffix of the log decays
// inside a tile, R the inclusive suffix, and gap the sum of the decays of the tiles in between:
//   diagonal tile:  log M_ij = E_i - E_j (i > j), P_j - P_i (i < j), 0 (i = j)
//   key tile left:  log M_ij = E_i + gap + R_j         = a_j + ... + a_(i-1)
//   key tile right: log M_ij = X_i + gap + P_j         = a_(i+1) + ... + a_j
// Off the diagonal M_ij = e^(E_i) * e^(gap + R_j) (or e^X_i * e^(gap + P_j)): both factors are
// <= 1. gap only grows more negative along the walk; once gap < -104, e^gap is below the
// smallest fp32 denormal, every further factor is exactly 0 and the walk in that direction stops
// (strong decays then cost O(T) instead of O(T^2)).
// Grid: x = V tiles, y = heads, z = query tiles (64-token tiles).
// Lanes: (TW/RB) x (TW/CB); lane (ri, ci) owns query rows ri*RB.., and in the score phase key
// columns ci*CB.. of the key tile, in the output phase value columns ci*CB.. of the V tile.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint NCL = TW / CB;
const uint NL = (TW / RB) * NCL;
const float GAP_MIN = -104.0;

shared vec4 s_A[TW * TW / 4u];
shared float s_a[TW];
shared vec4 s_e4[TW / 4u], s_p4[TW / 4u], s_fe4[TW / 4u], s_fx4[TW / 4u];  // query tile
shared float s_ka[TW];
shared vec4 s_kw4[TW / 4u];   // key tile column factors
shared float s_ktot;

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ri = lid / NCL, ci = lid % NCL;
    const uint vt = gl_WorkGroupID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, TW, s, local0);
    seq_info(s, b, t0, len);
    const uint Lq = min(TW, len - local0);
    const uint qb = t0 + local0;
    const uint qt = local0 / TW;
    const uint nt = (len + TW - 1u) / TW;
    const uint i0 = ri * RB;
    const uint j0 = ci * CB;
    const uint col0 = vt * TW + ci * CB;

    for (uint j = lid; j < TW; j += NL) {
        float a = 0.0;
        if (j < Lq)
            a = log_decay(b, qb + j, h);
        s_a[j] = a;
    }
    barrier();
    if (lid == 0u) {
        float run = 0.0;
        for (uint j = 0u; j < TW; j++) {
            s_e4[j >> 2u][j & 3u] = run;
            s_fe4[j >> 2u][j & 3u] = exp(run);
            run += s_a[j];
            s_p4[j >> 2u][j & 3u] = run;
        }
        run = 0.0;
        for (uint j = TW; j > 0u; j--) {
            s_fx4[(j - 1u) >> 2u][(j - 1u) & 3u] = exp(run);
            run += s_a[j - 1u];
        }
    }
    barrier();

    uint qr[RB];
    float den[RB];
    float acc[RB][CB];
    [[unroll]] for (uint r = 0u; r < RB; r++) {
        qr[r] = q_row(b, qb + min(i0 + r, Lq - 1u), h);
        den[r] = 0.0;
        [[unroll]] for (uint x = 0u; x < CB; x++)
            acc[r][x] = 0.0;
    }

    float gap_l = 0.0, gap_r = 0.0;
    uint m = 0u;
    [[dont_unroll]] while (m < nt) {
        // m = 0: the diagonal tile; 1..qt: tiles qt-1 .. 0; qt+1..nt-1: tiles qt+1 ..
        const uint dir = m == 0u ? 0u : (m <= qt ? 1u : 2u);
        const uint kt = dir == 1u ? qt - m : m == 0u ? qt : m;
        if (dir == 1u && gap_l < GAP_MIN) {
            m = qt + 1u;
            continue;
        }
        if (dir == 2u && gap_r < GAP_MIN)
            break;
        const float gap = dir == 1u ? gap_l : gap_r;
        const uint kb = t0 + kt * TW;
        const uint Lk = min(TW, len - kt * TW);

        // key tile column factors: e^(gap + R_j) (left), e^(gap + P_j) (right), 1 (diagonal)
        for (uint j = lid; j < TW; j += NL) {
            float a = 0.0;
            if (j < Lk)
                a = log_decay(b, kb + j, h);
            s_ka[j] = a;
        }
        barrier();
        if (lid == 0u) {
            float run = 0.0;
            for (uint j = 0u; j < TW; j++) {
                const uint jj = dir == 1u ? TW - 1u - j : j;
                run += s_ka[jj];
                s_kw4[jj >> 2u][jj & 3u] = dir == 0u ? 1.0 : exp(gap + run);
            }
            s_ktot = run;
        }
        barrier();

        // masked scores of the block (rows i0.., key columns j0..)
        {
            uint kr[CB];
            [[unroll]] for (uint x = 0u; x < CB; x++)
                kr[x] = k_row(b, kb + min(j0 + x, Lk - 1u), h);
            float sc[RB][CB];
            qk_block(qr, kr, sc);
            float wj[CB];
            [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                const vec4 w = s_kw4[j0 / 4u + x4];
                [[unroll]] for (uint y = 0u; y < 4u; y++)
                    wj[4u * x4 + y] = j0 + 4u * x4 + y < Lk ? w[y] : 0.0;
            }
            [[dont_unroll]] for (uint r = 0u; r < RB; r++) {
                const uint i = i0 + r;
                float rf = dir == 1u ? s_fe4[i >> 2u][i & 3u] : s_fx4[i >> 2u][i & 3u];
                rf = i < Lq ? (dir == 0u ? 1.0 : rf) : 0.0;
                [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++)
                    s_A[(i * TW + j0) / 4u + x4] =
                        ROW4(sc, 0u, x4) * rf * vec4(wj[4u * x4], wj[4u * x4 + 1u],
                                                     wj[4u * x4 + 2u], wj[4u * x4 + 3u]);
                ROTATE_ROWS(sc, CB)
            }
            // the diagonal tile: the in-tile mask e^(E_i - E_j) / e^(P_j - P_i)
            const uint rdiag = dir == 0u ? RB : 0u;
            float ej[CB], pj[CB];
            [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                const vec4 e = s_e4[j0 / 4u + x4], p = s_p4[j0 / 4u + x4];
                [[unroll]] for (uint y = 0u; y < 4u; y++) {
                    ej[4u * x4 + y] = e[y];
                    pj[4u * x4 + y] = p[y];
                }
            }
            [[dont_unroll]] for (uint r = 0u; r < rdiag; r++) {
                const uint i = i0 + r;
                const float ei = s_e4[i >> 2u][i & 3u], pi = s_p4[i >> 2u][i & 3u];
                [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                    vec4 mk;
                    [[unroll]] for (uint y = 0u; y < 4u; y++) {
                        const uint x = 4u * x4 + y, j = j0 + x;
                        mk[y] = i == j ? 1.0 : exp(i > j ? ei - ej[x] : pj[x] - pi);
                    }
                    s_A[(i * TW + j0) / 4u + x4] *= mk;
                }
            }
        }
        barrier();

        AV_BLOCK(s_A, i0, 0u, Lk, kb, Lk - 1u, h, b, col0, acc, den)

        if (dir == 1u)
            gap_l += s_ktot;
        else if (dir == 2u)
            gap_r += s_ktot;
        barrier();
        m++;
    }

    STORE_BLOCK(i0, Lq, qb, h, b, col0, acc, den)
}
