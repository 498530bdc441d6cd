#version 450
// LION, rnn form, step 1: the forward and the backward scan, one token at a time, the state on
// chip. SPEC section 3:
//   forward  S^F_i = lambda_(i-1) S^F_(i-1) + k_i v_i^T
//   backward S^B_i = lambda_(i+1) S^B_(i+1) + k_i v_i^T
//   o_i = scale (q_i^T (S^F_i + S^B_i) - (q_i . k_i) v_i)
// The forward scan reads its output before adding the current token, q_i^T (S^F_i - k_i v_i^T),
// the backward scan after: their sum is the SPEC expression, without the diagonal counted twice
// and without the cancellation of subtracting it again. With normalize the same for z (the
// ones column): den_i = q_i . (z^F_i - k_i) + q_i . z^B_i.
// Each workgroup covers a 64 x 64 tile (K rows x V columns) of one direction's state and writes
// the tile's partial outputs (summed over its K rows) to scratch; rnn_combine adds the partials
// of both directions and all K tiles. Scratch: [B, T, H, 2 * K tiles, VS] (VS = pc.xs) with the
// normalizer partial in column align4(V).
// Grid: x = K tiles * V tiles * 2 directions, y = heads, z = sequences.
// Lanes: (TW/RB) x (TW/CB); lane (ri, ci) owns rows ri*RB.. and columns ci*CB.. of the tile.
// Partial outputs of NS steps are reduced over the row groups through shared memory.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint NRL = TW / RB, NCL = TW / CB;
const uint NL = NRL * NCL;
const uint NS = RB;                      // steps between reductions
const uint Q4 = TW / 4u;                 // vec4 per partial row of the tile

shared vec4 s_red[NRL * NS * Q4];
shared float s_redz[NRL * NS];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ri = lid / NCL, ci = lid % NCL;
    const uint nvt = (pc.V + TW - 1u) / TW;
    const uint nkt = (pc.K + TW - 1u) / TW;
    const uint dir = gl_WorkGroupID.x & 1u;
    const uint tile = gl_WorkGroupID.x >> 1u;
    const uint kt = tile / nvt, vt = tile % nvt;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    const uint r0 = kt * TW + ri * RB;
    const uint c0 = vt * TW + ci * CB;
    const uint VS = pc.xs;
    const uint X = 2u * nkt * VS;
    const uint pcol = (kt * 2u + dir) * VS;   // this workgroup's partial within a token row
    const uint Va = align4(pc.V);
    const float fdiag = float(dir);            // the backward scan includes the diagonal

    float S[RB][CB];
    float Z[RB];
    [[unroll]] for (uint r = 0u; r < RB; r++) {
        Z[r] = 0.0;
        [[unroll]] for (uint c = 0u; c < CB; c++)
            S[r][c] = 0.0;
    }

    [[dont_unroll]] for (uint blk = 0u; blk < len; blk += NS) {
        [[dont_unroll]] for (uint u = 0u; u < NS; u++) {
            const uint n = blk + u;
            const bool valid = n < len;
            const uint nc = min(n, len - 1u);
            const uint t = dir == 0u ? nc : len - 1u - nc;
            // decay from the neighbour towards the scan's origin: a_(t-1) forward, a_(t+1)
            // backward; the first step starts from a zero state
            float mu = 0.0;   // 1 - lambda
            if (n != 0u && valid)
                mu = one_minus_exp(log_decay(b, t0 + (dir == 0u ? t - 1u : t + 1u), h));
            const float w = valid ? 1.0 : 0.0;

            const uint qr = q_row(b, t0 + t, h), kr = k_row(b, t0 + t, h), vr = v_row(b, t0 + t, h);
            float qv[RB], kv[RB], vv[CB];
            [[unroll]] for (uint r4 = 0u; r4 < RB / 4u; r4++) {
                const vec4 x = ld_q4(qr, r0 + 4u * r4);
                const vec4 y = ld_k4(kr, r0 + 4u * r4) * w;
                [[unroll]] for (uint e = 0u; e < 4u; e++) {
                    qv[4u * r4 + e] = x[e];
                    kv[4u * r4 + e] = y[e];
                }
            }
            [[unroll]] for (uint c4 = 0u; c4 < CB / 4u; c4++) {
                const vec4 x = ld_v4(vr, c0 + 4u * c4);
                [[unroll]] for (uint e = 0u; e < 4u; e++)
                    vv[4u * c4 + e] = x[e];
            }

            float qk = 0.0, oz = 0.0;
            float o[CB];
            [[unroll]] for (uint c = 0u; c < CB; c++)
                o[c] = 0.0;
            [[unroll]] for (uint r = 0u; r < RB; r++) {
                qk += qv[r] * kv[r];
                Z[r] -= mu * Z[r];
                oz += qv[r] * Z[r];
                Z[r] += kv[r];
                [[unroll]] for (uint c = 0u; c < CB; c++) {
                    S[r][c] -= mu * S[r][c];
                    o[c] += qv[r] * S[r][c];
                    S[r][c] += kv[r] * vv[c];
                }
            }
            qk *= fdiag;
            [[unroll]] for (uint c4 = 0u; c4 < CB / 4u; c4++)
                s_red[(ri * NS + u) * Q4 + ci * (CB / 4u) + c4] =
                    vec4(o[4u * c4], o[4u * c4 + 1u], o[4u * c4 + 2u], o[4u * c4 + 3u]) +
                    qk * vec4(vv[4u * c4], vv[4u * c4 + 1u], vv[4u * c4 + 2u], vv[4u * c4 + 3u]);
            if (ci == 0u)
                s_redz[ri * NS + u] = oz + qk;
        }
        barrier();

        // sum the row groups and write the partial outputs of these NS tokens
        for (uint e = lid; e < NS * Q4; e += NL) {
            const uint u = e / Q4, c4 = e % Q4;
            vec4 sum = vec4(0.0);
            [[unroll]] for (uint rr = 0u; rr < NRL; rr++)
                sum += s_red[(rr * NS + u) * Q4 + c4];
            const uint n = blk + u;
            const uint col = vt * TW + 4u * c4;
            if (n < len && col < Va) {
                const uint t = dir == 0u ? n : len - 1u - n;
                st4_buf[(pc.st_base + ((b * pc.T + t0 + t) * pc.H + h) * X + pcol + col) >> 2u] = sum;
            }
        }
        if (NORMALIZE && vt == 0u) {
            for (uint u = lid; u < NS; u += NL) {
                float sum = 0.0;
                [[unroll]] for (uint rr = 0u; rr < NRL; rr++)
                    sum += s_redz[rr * NS + u];
                const uint n = blk + u;
                if (n < len) {
                    const uint t = dir == 0u ? n : len - 1u - n;
                    st_buf[pc.st_base + ((b * pc.T + t0 + t) * pc.H + h) * X + pcol + Va] = sum;
                }
            }
        }
        barrier();
    }
}
