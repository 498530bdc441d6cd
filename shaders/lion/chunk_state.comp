#version 450
// LION, chunk form, step 1: the two chunk-level state scans (sequential over the chunks of a
// sequence, parallel over heads, 64 x 64 state tiles and the two directions).
//
// For chunk n with tokens [c0, c1) and log decays a_j:
//   forward:  S^F_0 = 0,    S^F_(n+1) = e^(A_n) S^F_n + sum_j e^(R_j) k_j v_j^T
//   backward: S^B_last = 0, S^B_(n-1) = e^(A_n) S^B_n + sum_j e^(P_j) k_j v_j^T
// with A_n the sum of the chunk's a_j, R_j = a_j + ... + a_(c1-1) (inclusive suffix) and
// P_j = a_c0 + ... + a_j (inclusive prefix). S^F_n holds every earlier token j decayed to the
// start of chunk n (log M = a_j + ... + a_(c0-1)); S^B_n every later token decayed to the end of
// chunk n (log M = a_c1 + ... + a_j). The state entering each chunk is written to scratch for
// chunk_output: [H, slots, 2, Kp, Va] (Va = pc.xs) and with normalize the same for z (the ones
// column): [H, slots, 2, Kp]. Chunk m of a sequence whose first 64-token tile is ft has slot
// ft * (64 / C) + m.
// With F_TRANS (backward pass) the same scans run for the transposed mask M^T (log M^T_ij =
// log M_ji): its paths leave out the source token and include the destination, so the token
// weights are the exclusive suffix X_j (forward) and the exclusive prefix E_j (backward).
// With F_BND the call is one piece of a longer one (host/lion_tsplit.c): each scan starts from
// the state entering the piece from its side instead of 0 and writes the state leaving it,
// through boundary slots in binding 3 (o, which this kernel never writes). A slot holds
// [NSH][2 directions][Kp][Va] states, then [NSH][2][Kp] z, NSH = sequences x heads of the call
// (cfg bits 17-31); at o_base come two consecutive slots: the forward scan reads slot 0 and
// writes slot 1, the backward scan reads slot 1 and writes slot 0.
// Grid: x = K tiles * V tiles * 2 directions, y = heads, z = sequences.
// Lanes: (TW/RB) x (TW/CB); lane (ri, ci) owns state rows ri*RB.. and columns ci*CB.. of the tile.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint NCL = TW / CB;     // column groups
const uint NL = (TW / RB) * NCL;

shared float s_a[TW];         // log decays of the chunk
shared float s_w[TW];         // e^R (forward) or e^P (backward)
shared float s_tot;           // 1 - e^(A_n)

const uint F_BND = 65536u;
#define BND ((pc.cfg & F_BND) != 0u)
layout(std430, binding = 3) buffer BNDB { float bnd_buf[]; };

// first element of slot so's state rows (sequence s, head h, direction dir), and of its z
uint bnd_state(uint so, uint s, uint h, uint dir, uint Kp, uint Va)
{
    const uint nsh = pc.cfg >> 17u;
    return pc.o_base + so * nsh * 2u * Kp * (Va + 1u) + ((s * pc.H + h) * 2u + dir) * Kp * Va;
}
uint bnd_z(uint so, uint s, uint h, uint dir, uint Kp, uint Va)
{
    const uint nsh = pc.cfg >> 17u;
    return pc.o_base + so * nsh * 2u * Kp * (Va + 1u) + nsh * 2u * Kp * Va +
           ((s * pc.H + h) * 2u + dir) * Kp;
}

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ri = lid / NCL, ci = lid % NCL;
    const uint C = CHUNK, nsub = TW / C;
    const uint Kp = align4(pc.K), Va = pc.xs;
    const uint nvt = (pc.V + TW - 1u) / TW;
    const uint dir = gl_WorkGroupID.x & 1u;
    const uint tile = gl_WorkGroupID.x >> 1u;
    const uint kt = tile / nvt, vt = tile % nvt;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    uint ft = s * ((pc.T + TW - 1u) / TW);
    if (VARLEN)
        ft = seqtab[s].z;
    const uint n = (len + C - 1u) / C;

    const uint r0 = kt * TW + ri * RB;   // first state row of this lane
    const uint c0 = vt * TW + ci * CB;   // first state column of this lane
    // z is kept by the lanes of the first column group of the first V tile
    const bool zlane = vt == 0u && ci == 0u;

    float S[RB][CB];
    float Z[RB];
    [[unroll]] for (uint r = 0u; r < RB; r++) {
        Z[r] = 0.0;
        [[unroll]] for (uint c = 0u; c < CB; c++)
            S[r][c] = 0.0;
    }

    if (BND) {   // the state entering the piece from this direction's side
        const uint st0 = bnd_state(dir, s, h, dir, Kp, Va), z0 = bnd_z(dir, s, h, dir, Kp, Va);
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            const uint row = r0 + r;
            [[unroll]] for (uint c = 0u; c < CB; c++)
                S[r][c] = row < Kp && c0 + c < Va ? bnd_buf[st0 + row * Va + c0 + c] : 0.0;
            Z[r] = NORMALIZE && zlane && row < Kp ? bnd_buf[z0 + row] : 0.0;
        }
    }

    [[dont_unroll]] for (uint m = 0u; m < n; m++) {
        const uint cm = dir == 0u ? m : n - 1u - m;
        const uint tb = t0 + cm * C;
        const uint L = min(C, len - cm * C);

        // the state entering chunk cm (in this direction)
        const uint sbase = ((h * pc.ntiles * nsub + ft * nsub + cm) * 2u + dir) * Kp;
        [[dont_unroll]] for (uint r = 0u; r < RB; r++) {
            if (r0 + r < Kp) {
                const uint row = pc.st_base + (sbase + r0 + r) * Va + c0;
                [[unroll]] for (uint c4 = 0u; c4 < CB / 4u; c4++)
                    if (c0 + 4u * c4 < Va)
                        st4_buf[(row + 4u * c4) >> 2u] = ROW4(S, 0u, c4);
            }
            ROTATE_ROWS_CYCLIC(S, CB)
        }
        if (NORMALIZE && zlane) {
            [[unroll]] for (uint r4 = 0u; r4 < RB / 4u; r4++)
                if (r0 + 4u * r4 < Kp)
                    z4_buf[(pc.z_base + sbase + r0 + 4u * r4) >> 2u] =
                        vec4(Z[4u * r4], Z[4u * r4 + 1u], Z[4u * r4 + 2u], Z[4u * r4 + 3u]);
        }

        // token weights: e^R_j (forward) or e^P_j (backward), and the chunk decay
        for (uint j = lid; j < C; j += NL) {
            float a = 0.0;
            if (j < L)
                a = log_decay(b, tb + j, h);
            s_a[j] = a;
        }
        barrier();
        if (lid == 0u) {
            float run = 0.0;
            for (uint j = 0u; j < L; j++) {
                const uint jj = dir == 0u ? L - 1u - j : j;
                if (TRANS) {
                    s_w[jj] = exp(run);
                    run += s_a[jj];
                } else {
                    run += s_a[jj];
                    s_w[jj] = exp(run);
                }
            }
            s_tot = one_minus_exp(run);
        }
        barrier();

        const float mu = s_tot;
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            Z[r] -= mu * Z[r];
            [[unroll]] for (uint c = 0u; c < CB; c++)
                S[r][c] -= mu * S[r][c];
        }
        [[dont_unroll]] for (uint j = 0u; j < L; j++) {
            const float w = s_w[j];
            const uint kr = k_row(b, tb + j, h), vr = v_row(b, tb + j, h);
            float kv[RB], vv[CB];
            [[unroll]] for (uint r4 = 0u; r4 < RB / 4u; r4++) {
                const vec4 x = ld_k4(kr, r0 + 4u * r4) * w;
                [[unroll]] for (uint e = 0u; e < 4u; e++)
                    kv[4u * r4 + e] = x[e];
            }
            [[unroll]] for (uint c4 = 0u; c4 < CB / 4u; c4++) {
                const vec4 x = ld_v4(vr, c0 + 4u * c4);
                [[unroll]] for (uint e = 0u; e < 4u; e++)
                    vv[4u * c4 + e] = x[e];
            }
            [[unroll]] for (uint r = 0u; r < RB; r++) {
                Z[r] += kv[r];
                [[unroll]] for (uint c = 0u; c < CB; c++)
                    S[r][c] += kv[r] * vv[c];
            }
        }
        barrier();
    }
    if (BND) {   // the state leaving the piece on the other side
        const uint so = 1u - dir;
        const uint st1 = bnd_state(so, s, h, dir, Kp, Va), z1 = bnd_z(so, s, h, dir, Kp, Va);
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            const uint row = r0 + r;
            [[unroll]] for (uint c = 0u; c < CB; c++)
                if (row < Kp && c0 + c < Va)
                    bnd_buf[st1 + row * Va + c0 + c] = S[r][c];
            if (NORMALIZE && zlane && row < Kp)
                bnd_buf[z1 + row] = Z[r];
        }
    }
}
